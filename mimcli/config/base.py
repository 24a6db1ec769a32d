"""The base of every config section: strict keys, finite floats, re-validated assignments."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are re-validated, and
    inf/nan are refused in every float (an infinite lambda or lr trains to NaN and exits 0 otherwise)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, allow_inf_nan=False)


def check_folder_name(value: str) -> str:
    """A single folder name: not empty, no path separator, not `.` or `..` (it must stay inside --out)."""
    if not value.strip() or "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError("must be a plain folder name (not empty, no '/', '\\', '.' or '..')")
    return value


def own_keys(section: type[Section]) -> set[str]:
    """The keys a section accepts, by their TOML names (`lambda`, not `lam`)."""
    return {field.alias or key for key, field in section.model_fields.items()}
