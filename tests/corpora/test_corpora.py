"""The packaged data sets: every file as it came from its source, each set with its licence and citation."""

from __future__ import annotations

import hashlib

import pytest

import corpora

SETS = ("medec", "medsafetybench", "pubmedqa")


def test_every_file_matches_the_hash_it_was_taken_with() -> None:
    root = corpora.path(".")
    listed = dict(line.split("  ")[::-1] for line in (root / "SHA256SUMS").read_text().splitlines())
    shipped = {p.relative_to(root).as_posix() for s in SETS for p in (root / s).iterdir()}
    assert set(listed) == shipped
    for name, digest in listed.items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("folder", SETS)
def test_each_set_has_its_licence_and_a_readme_row(folder: str) -> None:
    readme = corpora.path("README.md").read_text()
    assert (corpora.path(folder) / "LICENSE").read_text().strip()
    assert f"`{folder}/" in readme and f"`{folder}/LICENSE`" in readme


@pytest.mark.parametrize("name", [corpora.MEDEC_MS_VALIDATION, corpora.MEDSAFETYBENCH, corpora.PUBMEDQA_L])
def test_the_named_sets_are_found(name: str) -> None:
    assert corpora.path(name).exists()


def test_a_name_that_is_not_shipped_is_an_error() -> None:
    with pytest.raises(FileNotFoundError, match="not on the file system"):
        corpora.path("medec/medec-ms-test.csv")
