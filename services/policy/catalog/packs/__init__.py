"""Seed policy packs, one YAML file per pack (a package so the files ship in the wheel)."""
