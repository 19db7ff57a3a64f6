"""Simulated prompt traffic: ordinary users plus a few model thieves.

The prompts come from the small demo corpus shipped in ``spanwatch/data/corpus.json``.
Everything is deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import Final

from spanwatch.errors import ConfigError

__all__ = [
    "KINDS",
    "Corpus",
    "SimulatedClient",
    "TopicPrompts",
    "simulate",
    "write_events",
    "write_truth",
]

KINDS: Final[tuple[str, ...]] = ("benign", "harvester", "sweeper", "template_sweeper")
"""The client kinds the simulator can produce."""

CORPUS_VERSION: Final = 1

_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

# Share of queries that use a standalone prompt instead of a filled template.
_STANDALONE_SHARE: Final = 0.4
# Share of benign queries that re-issue one of the user's earlier prompts.
_BENIGN_REPEAT_SHARE: Final = 0.10
# Share of user-typed prompts written casually (lowercase start, no final punctuation).
_CASUAL_SHARE: Final = 0.15
# How many interests a benign user has: 1, 2 or 3 topics.
_INTEREST_WEIGHTS: Final = (0.6, 0.3, 0.1)
# Mean gap between one client's queries, in seconds.
_MEAN_GAP_RANGE: Final = (5.0, 60.0)
# Every client starts within this many seconds of start_ts.
_START_WINDOW: Final = 3600.0
# Tries to find a not-yet-sent filled template before accepting a repeat.
_FRESH_TRIES: Final = 20


@dataclass(frozen=True)
class TopicPrompts:
    """The prompts, templates and slot values of one topic."""

    name: str
    prompts: tuple[str, ...]
    templates: tuple[str, ...]
    slots: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class SimulatedClient:
    """One simulated API client and the ground truth about it."""

    client_id: str
    kind: str
    topics: tuple[str, ...]


@dataclass(frozen=True)
class Corpus:
    """The demo prompt corpus: topics, sweep templates and sweep subjects."""

    topics: dict[str, TopicPrompts]
    sweep_templates: tuple[str, ...]
    subjects: dict[str, tuple[str, ...]]

    @classmethod
    def load(cls, path: str | None = None) -> Corpus:
        """Read a corpus JSON file; without a path, read the packaged one."""
        if path is None:
            source = "packaged corpus spanwatch/data/corpus.json"
            try:
                text = (files("spanwatch") / "data" / "corpus.json").read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read the {source}: {exc}") from exc
        else:
            source = f"corpus file {path!r}"
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read the {source}: {exc}") from exc
        try:
            data: object = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"the {source} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: object, source: str = "corpus") -> Corpus:
        """Check a parsed corpus object and build a Corpus from it."""
        root = _mapping(data, source)
        version = root.get("version")
        if version != CORPUS_VERSION or isinstance(version, bool):
            raise ConfigError(f"{source}: 'version' must be {CORPUS_VERSION}, got {version!r}")

        raw_topics = _mapping(root.get("topics"), f"{source}: 'topics'")
        if not raw_topics:
            raise ConfigError(f"{source}: 'topics' must not be empty")
        topics: dict[str, TopicPrompts] = {}
        for name, raw in raw_topics.items():
            topics[name] = _topic(name, raw, f"{source}: topic {name!r}")

        sweep_templates = _strings(root.get("sweep_templates"), f"{source}: 'sweep_templates'")
        for i, template in enumerate(sweep_templates):
            names = _placeholders(template, f"{source}: sweep_templates[{i}]")
            if names != ("subject",):
                raise ConfigError(
                    f"{source}: sweep_templates[{i}] must use exactly one placeholder, "
                    f"{{subject}}, got {list(names)!r}"
                )

        raw_subjects = _mapping(root.get("subjects"), f"{source}: 'subjects'")
        missing = [name for name in topics if name not in raw_subjects]
        unknown = [name for name in raw_subjects if name not in topics]
        if missing or unknown:
            raise ConfigError(
                f"{source}: 'subjects' needs one list per topic "
                f"(missing: {missing!r}, unknown: {unknown!r})"
            )
        subjects = {
            name: _strings(raw_subjects[name], f"{source}: subjects[{name!r}]") for name in topics
        }
        return cls(topics=topics, sweep_templates=sweep_templates, subjects=subjects)


def simulate(
    n_benign: int = 40,
    n_harvesters: int = 2,
    n_sweepers: int = 1,
    n_template_sweepers: int = 1,
    queries_per_client: tuple[int, int] = (120, 240),
    seed: int = 0,
    start_ts: float = 1_767_225_600.0,
    corpus: Corpus | None = None,
) -> tuple[list[dict[str, object]], list[SimulatedClient]]:
    """Simulate interleaved traffic from benign users and extractors.

    Returns the events sorted by time and the clients (the ground truth).
    Each event is {"event_id", "client_id", "prompt", "ts"}.
    """
    for label, count in (
        ("n_benign", n_benign),
        ("n_harvesters", n_harvesters),
        ("n_sweepers", n_sweepers),
        ("n_template_sweepers", n_template_sweepers),
    ):
        if count < 0:
            raise ConfigError(f"{label} must be 0 or more, got {count}")
    low, high = queries_per_client
    if low < 1 or high < low:
        raise ConfigError(
            f"queries_per_client must be (low, high) with 1 <= low <= high, "
            f"got {queries_per_client!r}"
        )
    if corpus is None:
        corpus = Corpus.load()

    master = random.Random(seed)
    all_topics = tuple(corpus.topics)
    plan: list[tuple[str, str]] = []
    plan += [(f"benign-{i + 1:03d}", "benign") for i in range(n_benign)]
    plan += [(f"harvester-{i + 1:02d}", "harvester") for i in range(n_harvesters)]
    plan += [(f"sweeper-{i + 1:02d}", "sweeper") for i in range(n_sweepers)]
    plan += [(f"template-{i + 1:02d}", "template_sweeper") for i in range(n_template_sweepers)]

    clients: list[SimulatedClient] = []
    rows: list[tuple[float, int, int, str, str]] = []
    for order, (client_id, kind) in enumerate(plan):
        rng = random.Random(master.getrandbits(64))
        count = rng.randint(low, high)
        if kind == "benign":
            topics = _pick_interests(rng, all_topics)
            prompts = _benign(rng, corpus, topics, count)
        elif kind == "harvester":
            topics = all_topics
            prompts = _harvester(rng, corpus, count)
        elif kind == "sweeper":
            topics = all_topics
            prompts = _sweeper(rng, corpus, count)
        else:
            topics = all_topics
            prompts = _template_sweeper(rng, corpus, count)
        clients.append(SimulatedClient(client_id=client_id, kind=kind, topics=topics))
        for seq, (ts, prompt) in enumerate(zip(_times(rng, start_ts, count), prompts, strict=True)):
            rows.append((ts, order, seq, client_id, prompt))

    rows.sort(key=lambda row: (row[0], row[1], row[2]))
    events: list[dict[str, object]] = [
        {"event_id": f"sim-{seed}-{i:07d}", "client_id": client_id, "prompt": prompt, "ts": ts}
        for i, (ts, _order, _seq, client_id, prompt) in enumerate(rows)
    ]
    return events, clients


def write_events(events: list[dict[str, object]], path: str) -> None:
    """Write events as JSON Lines (UTF-8, one event per line)."""
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for event in events:
            fh.write(json.dumps(event, ensure_ascii=False) + "\n")


def write_truth(clients: list[SimulatedClient], path: str) -> None:
    """Write the ground truth as JSON Lines: client_id, kind and topics per client."""
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for client in clients:
            record = {
                "client_id": client.client_id,
                "kind": client.kind,
                "topics": list(client.topics),
            }
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------
# Corpus checking


def _mapping(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a JSON object")
    out: dict[str, object] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"{where} has an empty or non-string key: {key!r}")
        out[key] = item
    return out


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} must be a non-empty list of strings")
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{where}[{i}] must be a non-empty string, got {item!r}")
        out.append(item)
    return tuple(out)


def _placeholders(template: str, where: str) -> tuple[str, ...]:
    """Placeholder names of a template in first-use order; reject stray braces."""
    leftover = _PLACEHOLDER.sub("", template)
    if "{" in leftover or "}" in leftover:
        raise ConfigError(f"{where} has a malformed placeholder: {template!r}")
    return tuple(dict.fromkeys(_PLACEHOLDER.findall(template)))


def _topic(name: str, raw: object, where: str) -> TopicPrompts:
    fields = _mapping(raw, where)
    prompts = _strings(fields.get("prompts"), f"{where}: 'prompts'")
    templates = _strings(fields.get("templates"), f"{where}: 'templates'")
    raw_slots = _mapping(fields.get("slots"), f"{where}: 'slots'")
    slots = {
        slot: _strings(values, f"{where}: slots[{slot!r}]") for slot, values in raw_slots.items()
    }
    for i, template in enumerate(templates):
        names = _placeholders(template, f"{where}: templates[{i}]")
        if not names:
            raise ConfigError(f"{where}: templates[{i}] has no placeholder: {template!r}")
        missing = [slot for slot in names if slot not in slots]
        if missing:
            raise ConfigError(
                f"{where}: templates[{i}] uses placeholders without a slot list: {missing!r}"
            )
    return TopicPrompts(name=name, prompts=prompts, templates=templates, slots=slots)


# ---------------------------------------------------------------------------
# Traffic generation


@dataclass(frozen=True)
class _Query:
    """One generated prompt; template and values are kept so it can be edited later."""

    text: str
    topic: str
    template: str | None = None
    values: tuple[tuple[str, str], ...] = ()


def _fill(template: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def _from_template(rng: random.Random, topic: TopicPrompts, template: str) -> _Query:
    names = _placeholders(template, "template")
    values = {slot: rng.choice(topic.slots[slot]) for slot in names}
    return _Query(_fill(template, values), topic.name, template, tuple(values.items()))


def _user_query(rng: random.Random, topic: TopicPrompts) -> _Query:
    """A standalone prompt or a filled template, as a person would type it."""
    if rng.random() < _STANDALONE_SHARE:
        query = _Query(rng.choice(topic.prompts), topic.name)
    else:
        query = _from_template(rng, topic, rng.choice(topic.templates))
    if rng.random() < _CASUAL_SHARE:
        query = _Query(_casual(query.text), query.topic, query.template, query.values)
    return query


def _casual(text: str) -> str:
    text = text.rstrip("?.!")
    return text[:1].lower() + text[1:]


def _small_edit(rng: random.Random, corpus: Corpus, query: _Query) -> str:
    """Re-issue an earlier prompt, unchanged or with a small edit."""
    if query.template is not None and query.values and rng.random() < 0.4:
        values = dict(query.values)
        slot = rng.choice(list(values))
        choices = [v for v in corpus.topics[query.topic].slots[slot] if v != values[slot]]
        if choices:
            values[slot] = rng.choice(choices)
            return _fill(query.template, values)
    text = query.text
    edit = rng.randrange(5)
    if edit == 0:
        return text
    if edit == 1:
        return f"{text.rstrip('?.!')} please"
    if edit == 2:
        return f"please {text[:1].lower()}{text[1:]}"
    if edit == 3:
        return f"{text} Thanks!"
    return _casual(text)


def _pick_interests(rng: random.Random, all_topics: tuple[str, ...]) -> tuple[str, ...]:
    sizes = list(range(1, len(_INTEREST_WEIGHTS) + 1))
    k = min(rng.choices(sizes, weights=_INTEREST_WEIGHTS)[0], len(all_topics))
    return tuple(rng.sample(all_topics, k))


def _benign(rng: random.Random, corpus: Corpus, interests: tuple[str, ...], n: int) -> list[str]:
    """A user who sticks to 1-3 interests, the first one most often, and sometimes repeats."""
    weights = [len(interests) - i for i in range(len(interests))]
    history: list[_Query] = []
    out: list[str] = []
    for _ in range(n):
        if history and rng.random() < _BENIGN_REPEAT_SHARE:
            out.append(_small_edit(rng, corpus, rng.choice(history)))
            continue
        topic = corpus.topics[rng.choices(interests, weights=weights)[0]]
        query = _user_query(rng, topic)
        history.append(query)
        out.append(query.text)
    return out


def _harvester(rng: random.Random, corpus: Corpus, n: int) -> list[str]:
    """Self-instruct style harvesting: every query picks a topic uniformly over all topics."""
    names = tuple(corpus.topics)
    return [_user_query(rng, corpus.topics[rng.choice(names)]).text for _ in range(n)]


def _sweeper(rng: random.Random, corpus: Corpus, n: int) -> list[str]:
    """Round robin over all topics in a shuffled order, filling templates with fresh values."""
    order = list(corpus.topics)
    rng.shuffle(order)
    template_orders: dict[str, list[str]] = {}
    for name in order:
        templates = list(corpus.topics[name].templates)
        rng.shuffle(templates)
        template_orders[name] = templates
    visits = dict.fromkeys(order, 0)
    seen: set[str] = set()
    out: list[str] = []
    for i in range(n):
        name = order[i % len(order)]
        topic = corpus.topics[name]
        templates = template_orders[name]
        template = templates[visits[name] % len(templates)]
        visits[name] += 1
        text = _from_template(rng, topic, template).text
        for _ in range(_FRESH_TRIES):
            if text not in seen:
                break
            text = _from_template(rng, topic, template).text
        seen.add(text)
        out.append(text)
    return out


def _template_sweeper(rng: random.Random, corpus: Corpus, n: int) -> list[str]:
    """A fixed set of 1-3 sweep templates filled with subjects from every topic."""
    k = min(rng.randint(1, 3), len(corpus.sweep_templates))
    chosen = rng.sample(corpus.sweep_templates, k)
    pairs = [
        (template, subject)
        for template in chosen
        for subjects in corpus.subjects.values()
        for subject in subjects
    ]
    out: list[str] = []
    while len(out) < n:
        rng.shuffle(pairs)
        for template, subject in pairs[: n - len(out)]:
            out.append(_fill(template, {"subject": subject}))
    return out


def _times(rng: random.Random, start_ts: float, n: int) -> list[float]:
    """Query times: a random start in the first hour, then exponential gaps."""
    mean_gap = rng.uniform(*_MEAN_GAP_RANGE)
    ts = start_ts + rng.uniform(0.0, _START_WINDOW)
    out: list[float] = []
    for _ in range(n):
        out.append(round(ts, 3))
        ts += rng.expovariate(1.0 / mean_gap)
    return out
