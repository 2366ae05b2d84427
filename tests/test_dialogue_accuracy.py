"""Issue 5 acceptance: the built-in answer engine on the frozen hospital paraphrase set.

>= 90% top-1 on the in-scope questions (each asked as the first turn of a
fresh visit), and every out-of-scope question declined (no entry answered).
The set (tests/data/hospital_paraphrases.yaml) was written before the engine
was tuned and is not to be edited to make this pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge_avatar.config import load_config
from edge_avatar.dialogue import build_dialogue, load_knowledge
from edge_avatar.dialogue.embedding import shared_embedder

REPO = Path(__file__).resolve().parent.parent
SITE = REPO / "examples" / "hospital-reception" / "site.yaml"
KNOWLEDGE = REPO / "examples" / "hospital-reception" / "knowledge.yaml"
PARAPHRASES = REPO / "tests" / "data" / "hospital_paraphrases.yaml"
TARGET_TOP1 = 0.90


@pytest.fixture(scope="module")
def paraphrases() -> dict:
    return yaml.safe_load(PARAPHRASES.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dialogue():
    d = build_dialogue(load_config(site_file=SITE), embedder=shared_embedder())
    yield d
    d.close()


def test_paraphrase_set_is_big_enough_and_refers_to_real_entries(paraphrases):
    ids = {e.id for e in load_knowledge(KNOWLEDGE).entries}
    assert len(paraphrases["in_scope"]) >= 60
    assert len(paraphrases["out_of_scope"]) >= 10
    unknown = {item["id"] for item in paraphrases["in_scope"]} - ids
    assert not unknown, f"paraphrase set names entries the knowledge file lacks: {unknown}"
    # worded differently from the knowledge file: no paraphrase is one of the file's example questions
    examples = {q.lower().strip(" ?.!") for e in load_knowledge(KNOWLEDGE).entries for q in e.questions}
    copied = [i["q"] for i in paraphrases["in_scope"] if i["q"].lower().strip(" ?.!") in examples]
    assert not copied, f"paraphrases copied from the knowledge file: {copied}"


def test_top1_accuracy_at_least_90_percent(dialogue, paraphrases):
    misses = []
    for item in paraphrases["in_scope"]:
        dialogue.end_visit()
        reply = dialogue.respond(item["q"])
        if not (reply.answered and reply.entry_id == item["id"]):
            misses.append((item["q"], item["id"], reply.kind, reply.entry_id, round(reply.confidence, 3)))
    total = len(paraphrases["in_scope"])
    accuracy = (total - len(misses)) / total
    print(f"\nbuilt-in engine top-1 accuracy: {accuracy:.1%} ({total - len(misses)}/{total}); misses:")
    for miss in misses:
        print("  ", miss)
    assert accuracy >= TARGET_TOP1, f"top-1 accuracy {accuracy:.1%} < {TARGET_TOP1:.0%}; misses: {misses}"


def test_out_of_scope_questions_are_declined(dialogue, paraphrases):
    answered = []
    for question in paraphrases["out_of_scope"]:
        dialogue.end_visit()
        reply = dialogue.respond(question)
        if reply.answered or reply.entry_id is not None or reply.kind not in ("decline", "clarify"):
            answered.append((question, reply.kind, reply.entry_id, round(reply.confidence, 3)))
        # declining always offers a way on: rephrase or staff
        assert "staff" in reply.text.lower() or "did you mean" in reply.text.lower(), reply.text
    assert not answered, f"out-of-scope questions answered: {answered}"
