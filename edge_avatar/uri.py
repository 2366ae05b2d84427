"""Parsing of the device URIs used for cameras, microphones, speakers and outputs.

Why one parser: every source and sink is chosen by a URI in the config
(``v4l2:///dev/video0``, ``file://clip.mp4?loop=1``, ``window://?fullscreen=1``)
and an operator's typo must be refused the same way everywhere, naming the
URI and what the scheme accepts, never silently ignored.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote


def parse_uri(uri: str, allowed_options: tuple[str, ...] | None, error: type[Exception],
              what: str = "") -> tuple[str, str, dict[str, str]]:
    """``scheme://target?k=v`` -> (scheme, target, options).

    ``file://a/b`` keeps ``a/b`` as a relative path. Options not in
    ``allowed_options`` raise ``error`` (``None`` skips that check); ``what``
    prefixes messages (e.g. ``"output.uri "``).
    """
    scheme, sep, rest = uri.partition("://")
    if not sep or not scheme:
        raise error(f"{what}{uri!r} is not a URI (expected scheme://target)")
    target, _, query = rest.partition("?")
    options = {key: values[-1] for key, values in parse_qs(query, keep_blank_values=True).items()}
    unknown = sorted(set(options) - set(allowed_options)) if allowed_options is not None else []
    if unknown:
        raise error(f"{what}{uri}: unknown option {unknown[0]!r}; this scheme takes: "
                    f"{', '.join(allowed_options or ()) or 'none'}")
    return scheme.lower(), unquote(target), options


def option_flag(options: dict[str, str], name: str, uri: str, error: type[Exception],
                default: bool = False) -> bool:
    """A boolean URI option (``1/0``, ``true/false``, ``yes/no``, ``on/off``); anything else raises ``error``."""
    if name not in options:
        return default
    value = options[name].strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise error(f"{uri}: option {name}={value!r}; expected 1 or 0")
