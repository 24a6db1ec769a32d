"""The base of every config section: strict keys, finite floats, re-validated assignments."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

INT64 = 2**63  # torch and numpy hold seeds, sizes and counts in 64 bits: a larger integer cannot be used


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are re-validated, and
    inf/nan are refused in every float (an infinite lambda or lr trains to NaN and exits 0 otherwise)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _fits_in_64_bits(cls, value: Any) -> Any:
        """Every integer (alone or in a list) fits in a signed 64-bit integer, so no seed or size overflows
        torch or numpy later (a seed of 2**70 raised from deep inside torch.manual_seed)."""
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, int) and not -INT64 <= item < INT64:
                raise ValueError(f"must fit in 64 bits (below 2**63), not a {item.bit_length()}-bit integer")
        return value


def check_folder_name(value: str) -> str:
    """A single folder name: not empty, no path separator, not `.` or `..` (it must stay inside --out)."""
    if not value.strip() or "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError("must be a plain folder name (not empty, no '/', '\\', '.' or '..')")
    return value


def own_keys(section: type[Section]) -> set[str]:
    """The keys a section accepts, by their TOML names (`lambda`, not `lam`)."""
    return {field.alias or key for key, field in section.model_fields.items()}
