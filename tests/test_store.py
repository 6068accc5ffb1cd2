"""runtime.formats.store: where a model comes from (file, package, name in the local store or bundled)."""

import pytest

from runtime import CamError, CamSession
from runtime.formats.store import BUNDLED, find_package, split_reference, store_path
from zoo import ZooError, fetch


def test_unknown_names_are_clear(private_store):
    with pytest.raises(CamError, match="no package of that name"):
        CamSession("nosuchmodel")
    with pytest.raises(ZooError, match="nosuchmodel: not in the default index"):
        fetch("nosuchmodel", progress=False)


def test_names_resolve_in_the_store_first_then_bundled(private_store, packed):
    import shutil

    assert split_reference("shapes@1.0.0") == ("shapes", "1.0.0") and split_reference("shapes") == ("shapes", None)
    assert find_package("shapes") == BUNDLED / "shapes-1.1.0.zip"
    assert find_package("shapes@9.9.9") is None and find_package("../etc") is None
    for version in ("0.1.0", "0.10.0", "0.9.0"):
        shutil.copytree(packed.folder, store_path("tiny", version))
    assert find_package("tiny") == store_path("tiny", "0.10.0")  # versions compare as numbers
    assert find_package("tiny@0.9.0") == store_path("tiny", "0.9.0")
