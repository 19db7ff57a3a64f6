"""Build evaluation pools for the extraction detector from the datasets in ../shared/data.

The datasets are read at run time and never copied into the repo. The pools go to the
folder given by --out (default out/pools, which git ignores):

- benign.jsonl: one group per benign "user": CLINC150 and HWU64 intents (short commands),
  and single-topic slices of long instruction data (awesome-chatgpt-prompts contributors,
  self-instruct user-oriented apps, GPTeacher topics).
- attack.jsonl: what a self-instruct harvester sends: GPTeacher (the half not used for
  benign slices), the LLaMA-Factory Alpaca demo and the self-instruct seed tasks.
- templates.jsonl: the T0 template sweep, one group per template.
- summary.json: the numbers printed at the end.

Each record is {"text": str, "group": str, "source": str}.

    python bench/detection/pools.py --out out/pools
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import re
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"

MAX_CHARS = 4000
MAX_GROUP = 300
SEED = 0
MIN_AUTHOR_GROUP = 3  # awesome-chatgpt-prompts contributors, self-instruct apps
MIN_TOPIC_GROUP = 10  # GPTeacher single-topic slices (per side of the split)
MIN_ALPACA_WORD = 10  # Alpaca first words rarer than this go to "alpaca:other"

GPTEACHER_FILES = {
    "codegen": "codegen-instruct.json",
    "toolformer": "toolformer-dedupe-only-dataset.json",
    "roleplay": "roleplay-simple-deduped-roleplay-instruct.json",
}

# Programming languages for GPTeacher codegen: (topic, pattern, case sensitive).
# One-letter or common-word names (C, R, Go, Rust, Swift) only match when capitalized.
LANGUAGES: list[tuple[str, str, bool]] = [
    ("python", r"python", False),
    ("javascript", r"javascript|node\.?js|react|jquery", False),
    ("typescript", r"typescript", False),
    ("java", r"java", False),
    ("c++", r"c\+\+|cpp", False),
    ("c#", r"c#|csharp", False),
    ("c", r"C", True),
    ("sql", r"sql|mysql|postgresql|sqlite", False),
    ("shell", r"shell|bash|zsh", False),
    ("powershell", r"powershell", False),
    ("php", r"php", False),
    ("ruby", r"ruby", False),
    ("go", r"Go|golang", True),
    ("rust", r"Rust", True),
    ("swift", r"Swift", True),
    ("kotlin", r"kotlin", False),
    ("perl", r"perl", False),
    ("haskell", r"haskell", False),
    ("scala", r"scala", False),
    ("r", r"R", True),
]

# Roles for GPTeacher roleplay: topic -> words that name it. The first role word in the
# instruction decides the topic.
ROLES: dict[str, list[str]] = {
    "historian": ["historian", "archaeologist", "egyptologist"],
    "astronaut": ["astronaut", "cosmonaut"],
    "alien": ["alien", "extraterrestrial", "martian"],
    "botanist": ["botanist", "gardener", "horticulturist"],
    "wizard": ["wizard", "sorcerer", "sorceress", "witch", "mage", "alchemist"],
    "scientist": [
        "scientist",
        "physicist",
        "chemist",
        "biologist",
        "astrophysicist",
        "astronomer",
        "geneticist",
        "paleontologist",
        "researcher",
    ],
    "detective": ["detective", "sherlock holmes", "investigator"],
    "leonardo da vinci": ["leonardo da vinci", "leonardo"],
    "nikola tesla": ["nikola tesla", "tesla"],
    "shakespeare": ["shakespeare", "shakespearean"],
    "pirate": ["pirate"],
    "financial advisor": ["financial advisor", "financial planner", "investment advisor"],
    "architect": ["architect"],
    "engineer": ["engineer"],
    "philosopher": ["philosopher"],
    "knight": ["knight"],
    "dragon": ["dragon"],
    "ai": ["ai", "robot", "android", "artificial intelligence"],
    "doctor": ["doctor", "physician", "nurse", "surgeon"],
    "chef": ["chef", "baker"],
    "time traveler": ["time traveler", "time-traveler", "time traveller", "time-traveling"],
    "writer": ["author", "writer", "novelist", "poet", "playwright"],
    "anime": ["anime"],
    "ruler": ["king", "queen", "emperor", "empress", "pharaoh", "ruler", "monarch"],
    "teacher": ["teacher", "professor", "tutor"],
    "psychologist": ["psychologist", "therapist", "counselor", "psychiatrist"],
    "lawyer": ["lawyer", "attorney"],
    "explorer": ["explorer", "adventurer"],
    "cybersecurity expert": ["cybersecurity"],
    "ada lovelace": ["ada lovelace"],
    "jane austen": ["jane austen"],
    "einstein": ["einstein"],
    "musician": ["musician", "composer", "conductor", "singer", "mozart", "beethoven"],
    "artist": ["artist", "painter", "sculptor"],
    "soldier": ["soldier", "commander", "warrior", "samurai", "gladiator"],
    "superhero": ["superhero", "super hero"],
    "tour guide": ["tour guide", "travel guide"],
    "nutritionist": ["nutritionist", "dietitian", "fitness", "personal trainer"],
    "critic": ["critic", "reviewer"],
    "business": ["ceo", "entrepreneur", "elon musk"],
    "ship captain": ["captain"],
}


@dataclass(frozen=True)
class Item:
    text: str
    group: str
    source: str


# ---------------------------------------------------------------- text helpers


def clean(text: str) -> str:
    """Strip and cut a text to MAX_CHARS."""
    return text.strip()[:MAX_CHARS].strip()


def norm_key(text: str) -> str:
    """Key for exact deduplication: whitespace collapsed."""
    return " ".join(text.split())


def join_prompt(instruction: str, extra: str) -> str:
    """Instruction and input as one user message, joined by a newline."""
    instruction, extra = instruction.strip(), extra.strip()
    return f"{instruction}\n{extra}" if extra else instruction


def text_hash(text: str) -> str:
    return hashlib.sha256(norm_key(text).encode("utf-8")).hexdigest()


def word_pattern(words: Iterable[str], case_sensitive: bool = False) -> re.Pattern[str]:
    alternation = "|".join(words)
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.compile(rf"(?<![\w+#.-])(?:{alternation})(?![\w+#-])", flags)


LANGUAGE_PATTERNS = [(name, word_pattern([pat], cs)) for name, pat, cs in LANGUAGES]
ROLE_PATTERNS = [(role, word_pattern(re.escape(w) for w in words)) for role, words in ROLES.items()]
TOOL_LINE = re.compile(r"toolformer access:\s*([^\n]*)")


# ---------------------------------------------------------------- topic keys


def codegen_topic(instruction: str) -> str | None:
    """The one programming language named in the instruction (None if zero or several)."""
    found = {name for name, pattern in LANGUAGE_PATTERNS if pattern.search(instruction)}
    return found.pop() if len(found) == 1 else None


def toolformer_topic(instruction: str) -> str | None:
    """The tool set from the 'toolformer access:' header, e.g. 'python' or 'news+search'."""
    match = TOOL_LINE.search(instruction)
    if not match:
        return None
    tools = sorted(t.strip() for t in match.group(1).split(",") if t.strip())
    return "+".join(tools) or None


def roleplay_topic(instruction: str) -> str | None:
    """The role whose word appears first in the instruction."""
    best: tuple[int, str] | None = None
    for role, pattern in ROLE_PATTERNS:
        match = pattern.search(instruction)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), role)
    return best[1] if best else None


TOPIC_FUNCTIONS = {
    "codegen": codegen_topic,
    "toolformer": toolformer_topic,
    "roleplay": roleplay_topic,
}


# ---------------------------------------------------------------- loaders


def read_json(path: Path) -> object:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def read_jsonl(path: Path) -> list[dict[str, object]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def first_input(record: dict[str, object]) -> str:
    """The input of a self-instruct task's first instance ('' if none)."""
    instances = record.get("instances") or []
    if isinstance(instances, list) and instances and isinstance(instances[0], dict):
        return str(instances[0].get("input") or "")
    return ""


def load_clinc(data: Path) -> list[Item]:
    """CLINC150 in-scope queries of all splits, grouped by intent."""
    splits = read_json(data / "clinc150" / "data_full.json")
    assert isinstance(splits, dict)
    items = []
    for split in ("train", "val", "test"):
        for text, intent in splits[split]:
            if intent != "oos":
                items.append(Item(text, f"clinc:{intent}", "clinc150"))
    return items


def load_hwu(data: Path) -> list[Item]:
    """HWU64 utterances (as the user wrote them), grouped by scenario_intent."""
    items = []
    for path in sorted((data / "hwu64_nlu_eval" / "KFold_1").glob("*/*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter=";"):
                group = f"hwu:{row['scenario']}_{row['intent']}"
                items.append(Item(row["answer_from_user"], group, "hwu64"))
    return items


def load_awesome(data: Path) -> list[Item]:
    """awesome-chatgpt-prompts (2026 file, the one with contributors), grouped by contributor.

    The 2023 file has no contributor column, so it is not used.
    """
    csv.field_size_limit(sys.maxsize)
    path = data / "awesome_chatgpt_prompts" / "prompts_2026-03-20_pseudonymized.csv"
    items = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            contributor = (row.get("contributor") or "").strip()
            if contributor:
                group = f"awesome:{contributor}"
                items.append(Item(row["prompt"], group, "awesome_chatgpt_prompts"))
    return items


def load_user_oriented(data: Path) -> list[Item]:
    """Self-instruct user-oriented tasks (instruction + first input), grouped by app."""
    rows = read_jsonl(data / "self_instruct" / "user_oriented_instructions.jsonl")
    return [
        Item(
            join_prompt(str(row["instruction"]), first_input(row)),
            f"app:{row['motivation_app']}",
            "self_instruct/user_oriented",
        )
        for row in rows
    ]


def load_seed_tasks(data: Path) -> list[Item]:
    """Self-instruct seed tasks (instruction + first input), one group."""
    rows = read_jsonl(data / "self_instruct" / "seed_tasks.jsonl")
    return [
        Item(join_prompt(str(row["instruction"]), first_input(row)), "seed", "self_instruct/seed")
        for row in rows
    ]


def load_alpaca(data: Path) -> list[Item]:
    """LLaMA-Factory alpaca_en_demo, grouped by the instruction's first word."""
    rows = read_json(data / "llamafactory_alpaca_en_demo" / "alpaca_en_demo.json")
    assert isinstance(rows, list)
    texts = [join_prompt(row["instruction"], row.get("input") or "") for row in rows]
    words = [first_word(text) for text in texts]
    counts = Counter(words)
    return [
        Item(text, f"alpaca:{word if counts[word] >= MIN_ALPACA_WORD else 'other'}", "alpaca_demo")
        for text, word in zip(texts, words, strict=True)
    ]


def first_word(text: str) -> str:
    match = re.match(r"\W*([A-Za-z]+)", text)
    return match.group(1).lower() if match else ""


def load_gpteacher(data: Path, subset: str) -> list[Item]:
    """One GPTeacher subset; group is '<subset>:<topic>' or '<subset>:other'."""
    rows = read_json(data / "gpteacher" / GPTEACHER_FILES[subset])
    assert isinstance(rows, list)
    topic_of = TOPIC_FUNCTIONS[subset]
    source = f"gpteacher/{subset}"
    items = []
    for row in rows:
        topic = topic_of(row["instruction"]) or "other"
        text = join_prompt(row["instruction"], row["input"])
        items.append(Item(text, f"{subset}:{topic}", source))
    return items


def load_t0(data: Path) -> list[Item]:
    """T0 templated prompts; the template is the file name (records have no template field)."""
    folder = data / "self_instruct" / "t0_train_50k_data_per_template_first20"
    items = []
    for path in sorted(folder.glob("*.jsonl")):
        for row in read_jsonl(path):
            items.append(Item(str(row["prompt"]), f"t0:{path.stem}", "self_instruct/t0"))
    return items


# ---------------------------------------------------------------- pool building


def dedupe(items: Iterable[Item]) -> list[Item]:
    """Clean texts, drop empty ones and keep the first of each normalized text."""
    seen: set[str] = set()
    kept = []
    for item in items:
        text = clean(item.text)
        key = norm_key(text)
        if key and key not in seen:
            seen.add(key)
            kept.append(Item(text, item.group, item.source))
    return kept


def by_group(items: Iterable[Item]) -> dict[str, list[Item]]:
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        groups[item.group].append(item)
    return dict(groups)


def drop_small_groups(items: list[Item], min_size: int) -> list[Item]:
    return [item for group in by_group(items).values() if len(group) >= min_size for item in group]


def cap_groups(items: list[Item], max_size: int) -> list[Item]:
    """At most max_size items per group, sampled with a fresh Random(SEED) per group."""
    kept = []
    for group in by_group(items).values():
        if len(group) > max_size:
            group = random.Random(SEED).sample(group, max_size)
        kept.extend(group)
    return kept


def split_gpteacher(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """Split GPTeacher into benign slices and attack texts; no text goes to both.

    Each topic group with at least 2 * MIN_TOPIC_GROUP texts is ordered by text hash and
    dealt alternately: even positions to benign, odd to attack (50/50). Smaller groups and
    '<subset>:other' go to attack only.
    """
    benign: list[Item] = []
    attack: list[Item] = []
    for name, group in sorted(by_group(dedupe(items)).items()):
        if name.endswith(":other") or len(group) < 2 * MIN_TOPIC_GROUP:
            attack.extend(group)
            continue
        ordered = sorted(group, key=lambda item: text_hash(item.text))
        benign.extend(ordered[0::2])
        attack.extend(ordered[1::2])
    return benign, attack


def build_benign(data: Path, gpteacher_benign: list[Item]) -> list[Item]:
    short = dedupe(load_clinc(data) + load_hwu(data))
    authors = drop_small_groups(
        dedupe(load_awesome(data) + load_user_oriented(data)), MIN_AUTHOR_GROUP
    )
    topics = drop_small_groups(dedupe(gpteacher_benign), MIN_TOPIC_GROUP)
    return cap_groups(dedupe(short + authors + topics), MAX_GROUP)


def build_attack(data: Path, gpteacher_attack: list[Item]) -> list[Item]:
    return dedupe(gpteacher_attack + load_alpaca(data) + load_seed_tasks(data))


def remove_overlap(items: list[Item], other: list[Item]) -> tuple[list[Item], int]:
    """Items whose normalized text is not in other, and how many were removed."""
    keys = {norm_key(item.text) for item in other}
    kept = [item for item in items if norm_key(item.text) not in keys]
    return kept, len(items) - len(kept)


def overlap_count(first: list[Item], second: list[Item]) -> int:
    return len({norm_key(i.text) for i in first} & {norm_key(i.text) for i in second})


def write_pool(path: Path, items: list[Item]) -> None:
    """Writes beside the pool and renames over it, so an eval reading the
    pool while run.sh builds it again never sees half a file. The part file
    is this process's own: two run.sh chains may build the pools at once."""
    ordered = sorted(items, key=lambda item: (item.group, item.text))
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    with part.open("w", encoding="utf-8") as handle:
        for item in ordered:
            record = {"text": item.text, "group": item.group, "source": item.source}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    part.replace(path)


# ---------------------------------------------------------------- summary


def summarize(items: list[Item]) -> dict[str, object]:
    sizes = [len(group) for group in by_group(items).values()]
    words = [len(item.text.split()) for item in items]
    sources: dict[str, dict[str, int]] = {}
    for source in sorted({item.source for item in items}):
        mine = [item for item in items if item.source == source]
        sources[source] = {
            "groups": len({item.group for item in mine}),
            "texts": len(mine),
            "median_words": int(statistics.median(len(i.text.split()) for i in mine)),
        }
    return {
        "groups": len(sizes),
        "texts": len(items),
        "group_size_median": statistics.median(sizes) if sizes else 0,
        "group_size_min": min(sizes, default=0),
        "group_size_max": max(sizes, default=0),
        "median_words": statistics.median(words) if words else 0,
        "sources": sources,
    }


def print_summary(summary: dict[str, dict[str, object]]) -> None:
    header = f"{'pool':<12} {'groups':>6} {'texts':>6} {'med/min/max group':>18} {'med words':>9}"
    print(header)
    print("-" * len(header))
    for pool, numbers in summary.items():
        sizes = "/".join(
            f"{numbers[key]:g}" for key in ("group_size_median", "group_size_min", "group_size_max")
        )
        print(
            f"{pool:<12} {numbers['groups']:>6} {numbers['texts']:>6} {sizes:>18} "
            f"{numbers['median_words']:>9g}"
        )
    print()
    print(f"{'pool':<12} {'source':<28} {'groups':>6} {'texts':>6} {'med words':>9}")
    for pool, numbers in summary.items():
        sources = numbers["sources"]
        assert isinstance(sources, dict)
        for source, counts in sources.items():
            print(
                f"{pool:<12} {source:<28} {counts['groups']:>6} {counts['texts']:>6} "
                f"{counts['median_words']:>9}"
            )


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Build evaluation pools from ../shared/data.")
    parser.add_argument("--out", type=Path, default=Path("out/pools"), help="output folder")
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="shared data folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data: Path = args.data
    if not data.is_dir():
        print(f"data folder not found: {data}", file=sys.stderr)
        return 1

    gpteacher = [item for subset in GPTEACHER_FILES for item in load_gpteacher(data, subset)]
    gpteacher_benign, gpteacher_attack = split_gpteacher(gpteacher)
    benign = build_benign(data, gpteacher_benign)
    attack, removed = remove_overlap(build_attack(data, gpteacher_attack), benign)
    templates = dedupe(load_t0(data))

    overlap = overlap_count(benign, attack)
    print(f"benign/attack overlap: {overlap} (removed {removed} shared texts from attack)")
    print(f"templates/benign overlap: {overlap_count(templates, benign)}")
    print(f"templates/attack overlap: {overlap_count(templates, attack)}")
    if overlap:
        print("error: benign and attack pools share texts", file=sys.stderr)
        return 1

    pools = {"benign": benign, "attack": attack, "templates": templates}
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name, items in pools.items():
        write_pool(out / f"{name}.jsonl", items)
    summary = {name: summarize(items) for name, items in pools.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print()
    print_summary(summary)
    print(f"\nwrote {', '.join(f'{name}.jsonl' for name in pools)} and summary.json to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
