"""Secret settings from files: `<NAME>_FILE` names the file holding NAME's value, the official
postgres image's convention, which Docker's and Kubernetes' secrets (files, never environment
variables that `docker inspect` shows) fit."""

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr


def read_into(values: Any, names: Iterable[str], environ: Mapping[str, str] = os.environ) -> Any:
    """`values` (the settings' input) with each of `names` whose `<NAME>_FILE` variable is set
    read from that file (its last line break dropped). A setting given both ways, or a file
    that cannot be read, is refused naming the variable."""
    if not isinstance(values, dict):
        return values
    for name in names:
        variable = f"{name.upper()}_FILE"
        if not (path := environ.get(variable)) or isinstance(values.get(name), SecretStr):
            continue  # no file; or a value validated already, as settings validated anew carry
        if values.get(name):
            raise ValueError(
                f"{name.upper()} (the environment or .env) and {variable} are both set: keep one"
            )
        try:
            values[name] = Path(path).read_text(encoding="utf-8").removesuffix("\n")
        except OSError as error:
            raise ValueError(f"{variable}: cannot read {path}: {error.strerror}") from None
    return values
