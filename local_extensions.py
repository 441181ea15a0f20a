"""Jinja filters for cookiecutter.json (cookiecutter imports this from the template root)."""

import keyword
import re
import unicodedata

from cookiecutter.utils import simple_filter

from hooks.pre_gen_project import RESERVED_SLUGS


def identifier(name: str) -> str:
    """Turn any project name into a lowercase Python identifier that imports cleanly."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_") or "project"
    if slug[0].isdigit():
        slug = f"project_{slug}"
    if keyword.iskeyword(slug) or slug in RESERVED_SLUGS:
        slug = f"{slug}_project"
    return slug


IdentifierExtension = simple_filter(identifier)
