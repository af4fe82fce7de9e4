"""The scorer: validate, rules, features, ensemble, decide, emit (exactly once)."""
