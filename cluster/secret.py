"""Print one secret string from AWS Secrets Manager, for the cluster's start commands.

The node's instance profile reads it (``secretsmanager:GetSecretValue`` on that
secret only), so no credential is written into ``aws.yaml`` or onto a command line::

    PASSWORD="$(python ~/ghist-ray/cluster/secret.py us-west-2 ghist-ray/mlflow-admin)"
"""

import sys

import boto3

region, secret_id = sys.argv[1:3]
client = boto3.client("secretsmanager", region_name=region)
print(client.get_secret_value(SecretId=secret_id)["SecretString"])
