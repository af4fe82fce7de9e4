"""The rules fast path: rule packs as data, block/allow lists, safe evaluation."""
