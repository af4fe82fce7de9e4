"""Pure parts of the per-node script helpers: grouping and script assembly."""

from __future__ import annotations

import pytest

from fraudstream.redis_nodes import CROSS_SLOT_SHEBANG, group_by, node_script, script_sha


def test_group_by_keeps_first_seen_order_and_repeats() -> None:
    owner = {"a": "n1", "b": "n2", "c": "n1", "d": "n3"}
    assert group_by(["c", "b", "a", "c", "d"], owner.__getitem__) == {
        "n1": ["c", "a", "c"],
        "n2": ["b"],
        "n3": ["d"],
    }
    assert group_by([], owner.__getitem__) == {}


def test_node_script_opens_with_the_flag_and_ends_with_the_body() -> None:
    script = node_script("return #NODE_KEYS")
    assert script.splitlines()[0] == CROSS_SLOT_SHEBANG == "#!lua flags=allow-cross-slot-keys"
    assert script.endswith("\nreturn #NODE_KEYS")
    assert "redis.call('EXISTS'" in script
    assert "redis.call('EXISTS'" not in node_script("return 1", check_keys_first=False)


def test_node_script_refuses_a_body_with_its_own_shebang() -> None:
    with pytest.raises(ValueError, match="shebang"):
        node_script("#!lua\nreturn 1")


def test_script_sha_is_the_sha1_redis_uses() -> None:
    # SHA1 of "return 1", as `SCRIPT LOAD "return 1"` answers.
    assert script_sha("return 1") == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
