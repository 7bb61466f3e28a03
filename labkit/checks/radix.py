"""Checks for lab 21: a radix tree over token ids (SGLang's RadixAttention), in plain dicts.

A node is a dict:

    {"key": [token ids on the edge into this node], "children": {first token: child},
     "parent": parent node (None for the root), "lock_ref": int, "last_access": int}

The root has an empty key and lock_ref 1 (it is never evicted). A child is filed under the
first token of its key, so two children of one node never start with the same token. The
tokens spelled from the root down to a node are that node's *path*.

The learner writes (exercise 1)

    split_node(node, n)        cut node's key after n tokens; return the new upper node
    match_prefix(root, tokens) -> (n, node): tokens[:n] is the longest cached prefix and
                               path(node) == tokens[:n] (split a node if the match ends in it)
    insert(root, tokens)       -> how many tokens were already in the tree

and (exercise 2)

    evict(root, num_tokens)    drop least-recently-used unlocked leaves (whole leaves; a parent
                               left childless and unlocked becomes a leaf) until at least
                               num_tokens tokens are gone or nothing evictable is left;
                               return the tokens evicted

The checks compare with a brute-force oracle (every prefix of every inserted sequence) and
with reference implementations below, on edge cases and random sequences.
"""

from __future__ import annotations

import random

from labkit.checks import ExerciseFailed

# -- the tree helpers the notebook uses ---------------------------------------------------


def new_node(key=(), parent=None, lock_ref: int = 0, last_access: int = 0) -> dict:
    return {"key": list(key), "children": {}, "parent": parent, "lock_ref": lock_ref,
            "last_access": last_access}


def new_tree() -> dict:
    return new_node(lock_ref=1)  # the root: never evicted


def nodes(root: dict) -> list[dict]:
    """Every node below the root, parents before children."""
    out, stack = [], list(root["children"].values())
    while stack:
        x = stack.pop()
        out.append(x)
        stack.extend(x["children"].values())
    return out


def path_of(node: dict) -> list[int]:
    """The tokens spelled from the root down to (and including) node."""
    parts = []
    while node is not None:
        parts.append(node["key"])
        node = node["parent"]
    return [t for part in reversed(parts) for t in part]


def spelled(root: dict) -> set[tuple]:
    """Every token sequence the tree can match: each node's path and its prefixes."""
    out = {()}
    for x in nodes(root):
        base = path_of(x["parent"])
        out.update(tuple(base + x["key"][:i]) for i in range(1, len(x["key"]) + 1))
    return out


def show(root: dict, max_tokens: int = 8) -> str:
    """The tree as indented lines: key, lock_ref and last access of every node."""
    lines = ["(root)"]

    def walk(node, depth):
        firsts = sorted(node["children"])
        for first in firsts:
            x = node["children"][first]
            key = " ".join(map(str, x["key"][:max_tokens]))
            more = f" …(+{len(x['key']) - max_tokens})" if len(x["key"]) > max_tokens else ""
            branch = "└─" if first == firsts[-1] else "├─"
            lines.append(f"{'   ' * depth}{branch} [{key}{more}]  lock={x['lock_ref']} "
                         f"t={x['last_access']}")
            walk(x, depth + 1)

    walk(root, 1)
    return "\n".join(lines)


def lock(node: dict) -> None:
    """A running request locks its matched prefix: every node from it up to the root."""
    while node["parent"] is not None:
        node["lock_ref"] += 1
        node = node["parent"]


# -- reference implementations ---------------------------------------------------------------


def reference_split_node(node: dict, n: int) -> dict:
    head = new_node(node["key"][:n], node["parent"], node["lock_ref"], node["last_access"])
    node["parent"]["children"][head["key"][0]] = head  # head takes node's place
    node["key"], node["parent"] = node["key"][n:], head
    head["children"][node["key"][0]] = node
    return head


def reference_match_prefix(root: dict, tokens, split=reference_split_node):
    tokens, node, n = list(tokens), root, 0
    while n < len(tokens) and tokens[n] in node["children"]:
        child, k = node["children"][tokens[n]], 0
        while k < len(child["key"]) and n + k < len(tokens) and child["key"][k] == tokens[n + k]:
            k += 1
        if k < len(child["key"]):  # the match ends inside child: cut it there
            child = split(child, k)
        node, n = child, n + k
    return n, node


def reference_insert(root: dict, tokens, match=reference_match_prefix) -> int:
    tokens = list(tokens)
    n, node = match(root, tokens)
    if n < len(tokens):
        node["children"][tokens[n]] = new_node(tokens[n:], node)
    return n


def reference_evict(root: dict, num_tokens: int) -> int:
    evicted = 0
    while evicted < num_tokens:
        leaves = [x for x in nodes(root) if not x["children"] and x["lock_ref"] == 0]
        if not leaves:
            break
        x = min(leaves, key=lambda x: x["last_access"])
        del x["parent"]["children"][x["key"][0]]
        evicted += len(x["key"])
    return evicted


# -- checking --------------------------------------------------------------------------------


def _call(name, fn, *args):
    try:
        return fn(*args)
    except NotImplementedError as e:
        raise ExerciseFailed(f"{name}: not implemented yet — {e}") from None
    except ExerciseFailed:
        raise
    except Exception as e:  # noqa: BLE001 - report any crash with the failing input
        raise ExerciseFailed(f"{name} raised {type(e).__name__}: {e}") from None


def _check_shape(root: dict, where: str) -> None:
    for x in nodes(root):
        p = x["parent"]
        if not x["key"]:
            raise ExerciseFailed(f"{where}: a node below the root has an empty key "
                                 f"(path {path_of(p)})")
        if p["children"].get(x["key"][0]) is not x:
            raise ExerciseFailed(f"{where}: the node with path {path_of(x)} is not filed under "
                                 f"its first token {x['key'][0]} in its parent's children "
                                 "(or its 'parent' is wrong)")


def check_split_node(fn) -> int:
    """Cut one edge at every possible place; the tree must spell the same sequences."""
    n = 0
    for seq_len in (2, 3, 7):
        for cut in range(1, seq_len):
            root = new_tree()
            seq = list(range(10, 10 + seq_len))
            reference_insert(root, seq)
            reference_insert(root, [99])
            node = root["children"][10]
            node["lock_ref"], node["last_access"] = 2, 5
            before = spelled(root)
            where = f"split_node(node with key {seq}, {cut})"
            head = _call("split_node", fn, node, cut)
            if not isinstance(head, dict) or head.get("key") != seq[:cut]:
                raise ExerciseFailed(f"{where}: expected the upper node with key {seq[:cut]}, "
                                     f"got {head.get('key') if isinstance(head, dict) else head!r}")
            if root["children"].get(10) is not head or node["parent"] is not head:
                raise ExerciseFailed(f"{where}: the upper node must replace the old one in the "
                                     "parent's children and become its parent")
            if node["key"] != seq[cut:] or head["children"] != {seq[cut]: node}:
                raise ExerciseFailed(f"{where}: expected the old node to keep {seq[cut:]} as "
                                     f"the upper node's only child; it has key {node['key']}")
            if (head["lock_ref"], head["last_access"]) != (2, 5):
                raise ExerciseFailed(f"{where}: the upper node must copy lock_ref and "
                                     "last_access (every request that locked the node also "
                                     "uses its first part)")
            _check_shape(root, where)
            if spelled(root) != before:
                raise ExerciseFailed(f"{where}: the tree spells different sequences after "
                                     "the split")
            n += 1
    print(f"✔ split_node: passed {n} cases")
    return n


def _sequences(rng: random.Random, count: int) -> list[list[int]]:
    """Random sequences that share prefixes of every length (small alphabet, extensions of
    earlier sequences, exact repeats, prefixes of earlier ones): the cases that split nodes."""
    seqs: list[list[int]] = []
    for _ in range(count):
        kind = rng.random()
        if seqs and kind < 0.5:
            base = rng.choice(seqs)
            seq = base[:rng.randint(0, len(base))] + [rng.randint(0, 5)
                                                      for _ in range(rng.randint(0, 6))]
        elif seqs and kind < 0.6:
            seq = list(rng.choice(seqs))
        else:
            seq = [rng.randint(0, 5) for _ in range(rng.randint(0, 9))]
        seqs.append(seq)
    return seqs


def _oracle_match(inserted: list[list[int]], tokens: list[int]) -> int:
    best = 0
    for s in inserted:
        k = 0
        while k < min(len(s), len(tokens)) and s[k] == tokens[k]:
            k += 1
        best = max(best, k)
    return best


def _all_prefixes(inserted) -> set[tuple]:
    return {tuple(s[:i]) for s in inserted for i in range(len(s) + 1)} | {()}


def check_match_and_insert(match_prefix, insert, rounds: int = 30) -> int:
    """Random sequences: insert returns what was already there, match finds the longest
    cached prefix and ends on a node, and the tree spells exactly the inserted prefixes."""
    edge = [[[1, 2, 3, 4], [1, 2], [1, 2, 5], [], [1, 2, 3, 4], [7], [1, 2, 3, 4, 5, 6]]]
    rng = random.Random(0)
    n = 0
    for seqs in edge + [_sequences(rng, rng.randint(3, 25)) for _ in range(rounds)]:
        root, inserted = new_tree(), []
        for seq in seqs:
            probe = _sequences(rng, 1)[0] if rng.random() < 0.5 else seq
            where = f"match_prefix(tree of {inserted}, {probe})"
            got = _call("match_prefix", match_prefix, root, list(probe))
            if not (isinstance(got, tuple) and len(got) == 2):
                raise ExerciseFailed(f"{where}: expected a pair (n, node), got {got!r}")
            k, node = got
            if k != _oracle_match(inserted, probe):
                raise ExerciseFailed(f"{where}: expected n = {_oracle_match(inserted, probe)}, "
                                     f"got {k}")
            if not isinstance(node, dict) or path_of(node) != list(probe[:k]):
                raise ExerciseFailed(f"{where}: the node returned should spell {probe[:k]}, it "
                                     f"spells {path_of(node) if isinstance(node, dict) else node}"
                                     " (split the node where the match ends)")
            _check_shape(root, where)
            if spelled(root) != _all_prefixes(inserted):
                raise ExerciseFailed(f"{where}: matching changed what the tree holds")
            where = f"insert(tree of {inserted}, {seq})"
            got = _call("insert", insert, root, list(seq))
            if got != _oracle_match(inserted, seq):
                raise ExerciseFailed(f"{where}: expected {_oracle_match(inserted, seq)} tokens "
                                     f"already cached, got {got!r}")
            inserted.append(seq)
            _check_shape(root, where)
            if spelled(root) != _all_prefixes(inserted):
                missing = sorted(_all_prefixes(inserted) - spelled(root), key=len)
                extra = sorted(spelled(root) - _all_prefixes(inserted), key=len)
                raise ExerciseFailed(f"{where}: the tree should spell every prefix of "
                                     f"{inserted}; missing {[list(m) for m in missing[:3]]}, "
                                     f"extra {[list(e) for e in extra[:3]]}")
            n += 2
    print(f"✔ match_prefix + insert: passed {n} cases (node splits, repeats, prefixes, "
          "random sequences vs a brute-force oracle)")
    return n


def random_tree(rng: random.Random, num_seqs: int, lock_some: bool = True) -> dict:
    """A tree built from random sequences, every node with its own access time, a few
    paths locked (as running requests lock them)."""
    root = new_tree()
    for seq in _sequences(rng, num_seqs):
        reference_insert(root, seq)
    all_nodes = nodes(root)
    for t, x in zip(rng.sample(range(1, 10 * len(all_nodes) + 2), len(all_nodes)), all_nodes):
        x["last_access"] = t
    if lock_some:
        for x in rng.sample(all_nodes, min(len(all_nodes), rng.randint(0, 2))):
            lock(x)
    return root


def _copy_tree(root: dict) -> dict:
    new = new_node(root["key"], None, root["lock_ref"], root["last_access"])
    for first, child in root["children"].items():
        c = _copy_tree(child)
        c["parent"] = new
        new["children"][first] = c
    return new


def check_evict(fn, rounds: int = 40) -> int:
    """LRU leaf eviction vs the reference on random trees with locked paths."""
    rng = random.Random(1)
    cases = []
    # edge cases: empty tree, nothing asked, all locked, one exact leaf, a whole leaf for 1
    empty = new_tree()
    cases += [(empty, 5), (random_tree(rng, 6, lock_some=False), 0)]
    locked = random_tree(rng, 6, lock_some=False)
    for x in nodes(locked):
        if not x["children"]:
            lock(x)
    cases.append((locked, 100))
    one = new_tree()
    reference_insert(one, [1, 2, 3, 4, 5])
    reference_insert(one, [1, 2, 9])
    for x, t in zip(sorted(nodes(one), key=lambda x: len(x["key"])), (3, 1, 2)):
        x["last_access"] = t  # [9] newest, [3 4 5] oldest leaf, [1 2] their parent
    cases += [(one, 1), (_copy_tree(one), 2), (_copy_tree(one), 3), (_copy_tree(one), 99)]
    for _ in range(rounds):
        tree = random_tree(rng, rng.randint(2, 14))
        evictable = sum(len(x["key"]) for x in nodes(tree) if x["lock_ref"] == 0)
        cases.append((tree, rng.choice([1, rng.randint(1, evictable + 1), evictable + 5])))
    for tree, want in cases:
        expected_tree = _copy_tree(tree)
        expected = reference_evict(expected_tree, want)
        locked_paths = {tuple(path_of(x)) for x in nodes(tree) if x["lock_ref"] > 0}
        before = show(tree)
        where = f"evict(tree below, {want})\n{before}\n"
        got = _call("evict", fn, tree, want)
        _check_shape(tree, where)
        kept = {tuple(path_of(x)) for x in nodes(tree)}
        if not locked_paths <= kept:
            lost = sorted(locked_paths - kept, key=len)[0]
            raise ExerciseFailed(f"{where}evicted the locked node with path {list(lost)}: a "
                                 "running request is still reading it")
        if got != expected:
            raise ExerciseFailed(f"{where}expected {expected} tokens evicted, got {got!r}")
        if spelled(tree) != spelled(expected_tree):
            raise ExerciseFailed(f"{where}expected this tree afterwards:\n{show(expected_tree)}"
                                 f"\ngot:\n{show(tree)}")
    print(f"✔ evict: passed {len(cases)} cases (LRU order, cascade to parents, locked nodes "
          "kept, whole leaves)")
    return len(cases)
