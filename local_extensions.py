"""Jinja filters for cookiecutter.json (cookiecutter imports this from the template root)."""

import json
import keyword
import re
import unicodedata

from cookiecutter.utils import simple_filter

from hooks.pre_gen_project import APP_ROLE_SUFFIX, NAME_BYTES, RESERVED_SLUGS


def identifier(name: str) -> str:
    """Turn any project name into a lowercase Python identifier that imports cleanly."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_") or "project"
    if slug[0].isdigit():
        slug = f"project_{slug}"
    if keyword.iskeyword(slug) or slug in RESERVED_SLUGS:
        slug = f"{slug}_project"
    return slug


def postgres_name(slug: str) -> str:
    """The default role and database name for a slug: one PostgreSQL keeps as it is.

    A leading `pg_` is PostgreSQL's (`pg_admin` becomes `admin`); a slug is ASCII, so 63
    characters are 63 bytes, the longest name PostgreSQL does not cut short, less the app's
    role's suffix (the role is the user's name with it).
    """
    name = re.sub(r"^(pg_)+", "", slug) or slug.replace("_", "")  # `pg_` alone: `pg`
    return name[: NAME_BYTES - len(APP_ROLE_SUFFIX)]


# Kubernetes names of the bake's objects are at most this long, so that the migration Job's,
# `<name>-migrate-<release>`, stays within the 63 characters of a label value (its pods carry
# it as `job-name`) for a release tag of up to 24 characters.
KUBERNETES_NAME_LENGTH = 30


def kubernetes_name(slug: str) -> str:
    """The slug as a Kubernetes object name: a DNS label as a Service needs one (a letter
    first, then lowercase letters, digits and `-`, no `-` last), at most 30 characters."""
    name = re.sub(r"[^a-z0-9]+", "-", slug).strip("-")
    if not name[:1].isalpha():
        name = f"project-{name}"
    return name[:KUBERNETES_NAME_LENGTH].rstrip("-")


def literal(value: object) -> str:
    """A double-quoted string literal that is valid Python and valid TOML, for any text.

    Jinja's `tojson` escapes characters beyond the BMP as surrogate pairs (an emoji becomes
    `\\ud83d\\udd11`), which Python reads as two broken characters and TOML rejects.
    """
    # json escapes the other control characters; TOML wants DEL escaped too.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


IdentifierExtension = simple_filter(identifier)
LiteralExtension = simple_filter(literal)
KubernetesNameExtension = simple_filter(kubernetes_name)
PostgresNameExtension = simple_filter(postgres_name)
