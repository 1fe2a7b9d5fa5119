"""Operator classes; each module holds one structure and all of its rules."""
