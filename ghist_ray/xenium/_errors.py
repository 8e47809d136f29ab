"""The one exception every Xenium reader raises for bad input."""

from collections.abc import Iterator
from contextlib import contextmanager

from ghist_ray.errors import GhistError


class XeniumFormatError(GhistError, ValueError):
    """A Xenium file is missing, unreadable or inconsistent; the message names the file."""


@contextmanager
def reading(url: str, what: str) -> Iterator[None]:
    """Turn a library's low-level failure while reading `url` into one line naming the file."""
    try:
        yield
    except XeniumFormatError:
        raise
    except (OSError, KeyError, ValueError, TypeError, EOFError) as err:
        raise XeniumFormatError(f"{url}: {what} ({type(err).__name__}: {err})") from err
