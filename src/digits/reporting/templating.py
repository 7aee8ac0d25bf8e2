"""The one Jinja2 environment every HTML page and notebook card of digits is rendered with.

The templates live in `digits/reporting/templates/` (shipped with the package): `base.html.j2` is the page every
report extends (its CSS is `report.css`), `macros.html.j2` holds the pieces pages share (tables, figures, verdict
badges) and `notebook/` the notebook cards. Every value a template prints is escaped (run names, paths and sweep
parameters come from users), and a value a template asks for but was not given is an error, not an empty string.
"""

from __future__ import annotations

import base64
from pathlib import Path

import jinja2

from digits import __version__
from digits.evaluation.comparison import format_duration


def png_data_uri(png: bytes | str | Path) -> str:
    """A PNG (its bytes, or the path of its file) as a data URI, so a page or card needs no file beside it."""
    content = png if isinstance(png, bytes) else Path(png).read_bytes()
    return "data:image/png;base64," + base64.b64encode(content).decode("ascii")


def is_file(path: str | Path | None) -> bool:
    return path is not None and Path(path).is_file()


def thousands(count: int) -> str:
    """12345 → "12,345"."""
    return f"{count:,}"


def percent(fraction: float) -> str:
    """0.98765 → "98.77" (the caller writes the " %")."""
    return f"{100 * fraction:.2f}"


def setting_value(value) -> str:
    """A config or metrics value as a table shows it: "—" for none, 0.001 as "0.001", 60000 as "60,000"."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


environment = jinja2.Environment(
    loader=jinja2.PackageLoader("digits.reporting", "templates"),
    autoescape=True,  # Every template, whatever its name: names and paths come from users.
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
environment.filters.update(png_data_uri=png_data_uri, thousands=thousands, percent=percent,
                           duration=format_duration, setting_value=setting_value)
environment.tests["file"] = is_file
environment.globals["version"] = __version__


def render(template: str, **context) -> str:
    """Render one template of digits/reporting/templates with these values."""
    return environment.get_template(template).render(**context)
