"""Kaggle says no (issue 21): every refusal a preflight can know is said before SaveKernel or CreateSubmission is
sent (the competition, the sources, the title); the whole SaveKernel reply is read, a version it made with a
problem recorded and marked; Kaggle's own refusals are mapped to their fix; every push sends a session timeout."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from kaggle_standin import KernelVersion, StoredDataset
from lorakit_fixtures import COMPETITION, USERNAME, error_line, one_document, push, push_pull, versions

AG_NEWS = "amananandrai/ag-news-classification-dataset"
RULES = f"https://www.kaggle.com/competitions/{COMPETITION}/rules"


def metadata_write(kit, **changes) -> None:
    meta = {**kit.metadata, **changes}
    (kit.repo / "kernel-metadata.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def iso_in(days: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def sent(kit) -> tuple:
    """(SaveKernel requests, CreateSubmission requests) the stand-in received."""
    return len(kit.state.calls("SaveKernel")), len(kit.state.calls("CreateSubmission"))


# ----------------------------------------------------------------------------------- 1. the competition
def test_rules_not_accepted_refuse_push_run_sweep_and_submit_before_anything_is_sent(kit):
    push_pull(kit)
    assert len(kit.state.calls("GetCompetition")) == 1  # one call per push
    kit.state.competition_info["userHasEntered"] = False  # Kaggle then leaves the field out of its reply
    for argv in (("push", "-m", "x", "--set", "lora_r=4"), ("run", "-m", "x", "--set", "lora_r=4", "--submit"),
                 ("sweep", "--grid", "lora_r=2,4"), ("submit", 1)):
        code, out, err = kit.run(*argv)
        line = error_line(err)
        assert code == 6 and f"you have not accepted the rules of {COMPETITION}: accept them at {RULES}" in line, argv
    assert sent(kit) == (1, 0) and not kit.state.calls("StartSubmissionUpload")
    assert len(kit.rows()) == 1 and not (kit.repo / "submissions" / "sweeps").exists()


def test_a_closed_competition_refuses_a_push_meant_for_submission_and_notes_a_plain_one(kit):
    kit.state.competition_info["deadline"] = iso_in(-1)
    for argv, flag in ((("run", "-m", "x", "--submit"), "--submit"),
                       (("sweep", "--grid", "lora_r=2,4", "--submit-best", "1"), "--submit-best")):
        code, out, err = kit.run(*argv)
        line = error_line(err)
        assert code == 6 and "takes no submissions that count (its deadline passed" in line
        assert f"a run for {flag} would be wasted; push without {flag}; nothing pushed" in line
    assert sent(kit) == (0, 0)
    push_pull(kit)  # a plain push goes ahead, with a note
    code, out, err = kit.run("push", "-m", "y", "--set", "lora_r=4")
    assert code == 0 and f"note: {COMPETITION} takes no submissions that count (its deadline passed" in err
    code, out, err = kit.run("submit", 1)  # a late submission is scored, not ranked: sent, with a note
    assert code == 0 and "a late submission is scored but not ranked" in err and sent(kit)[1] == 1
    kit.state.competition_info["submissionsDisabled"] = True
    code, out, err = kit.run("submit", 1, "--again")  # past the duplicate guard: the competition's own refusal
    assert code == 6 and "has its submissions disabled: Kaggle would refuse it" in error_line(err)
    assert sent(kit)[1] == 1


@pytest.mark.parametrize("fault", ["500", "{}"])
def test_a_competition_reply_that_cannot_be_read_is_a_note_never_a_refusal(kit, fault):
    if fault == "500":
        kit.state.fail("GetCompetition", 500, times=None)
    else:
        kit.state.odd("GetCompetition", "{}", times=None)  # a proxy's empty object: no competition named
    out, err = push(kit)
    assert "pushed v1" in out and f"note: could not read the competition {COMPETITION}" in err
    assert "its rules and deadline are not checked" in err


def test_an_unknown_competition_is_not_found_before_pushing(kit):
    code, out, err = kit.run("push", "-m", "x", "--competition", "no-such-competition")
    assert code == 7 and "Kaggle has no competition 'no-such-competition'" in error_line(err) and sent(kit) == (0, 0)


# -------------------------------------------------------------------------------------- 2. the sources
def test_every_source_is_looked_up_before_savekernel_and_each_missing_one_named(kit):
    kit.state.datasets[("bob", "secret-data")] = StoredDataset("bob", "secret-data", "Secret data", True, "", "",
                                                               [{}], [""], ["READY"])
    metadata_write(kit, dataset_sources=[AG_NEWS, "alice/missing-data", "bob/secret-data"],
                   kernel_sources=["alice/no-such-kernel"], model_sources=["google/bert/transformers/base/3"],
                   competition_sources=[COMPETITION, "other-competition"])
    code, out, err = kit.run("push", "-m", "x")
    line = error_line(err)
    assert code == 6 and line.count("Kaggle would not attach")
    for named in ("dataset_sources 'alice/missing-data': no such dataset", "dataset_sources 'bob/secret-data': you "
                  "may not read it (403)", "kernel_sources 'alice/no-such-kernel': no such kernel",
                  "model_sources 'google/bert/transformers/base/3': no such model instance",
                  "competition_sources 'other-competition': no such competition"):
        assert named in line, named
    assert AG_NEWS not in line and "fix kernel-metadata.json" in line and "nothing pushed" in line
    assert sent(kit) == (0, 0) and not kit.ledger.exists()
    assert len(kit.state.calls("GetDataset")) == 3 and len(kit.state.calls("GetModelInstance")) == 1
    assert len(kit.state.calls("GetCompetition")) == 2  # the project's once, for both checks; the other one
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4")  # refused before the sweep is recorded
    assert code == 6 and "alice/missing-data" in error_line(err)
    assert sent(kit) == (0, 0) and not (kit.repo / "submissions" / "sweeps").exists()

    kit.state.models[("google", "bert", "transformers", "base")] = 2
    code, out, err = kit.run("push", "-m", "x")
    assert "model_sources 'google/bert/transformers/base/3': it has no version 3 (its newest is 2)" in error_line(err)
    kit.state.kernels[(USERNAME, "no-such-kernel")] = [KernelVersion(1, "print(1)", {}, ["COMPLETE"], {})]
    metadata_write(kit, dataset_sources=[AG_NEWS], model_sources=["google/bert/transformers/base/2"],
                   competition_sources=[COMPETITION])
    out, err = push(kit)
    assert "pushed" in out and len(kit.state.calls("SaveKernel")) == 1


def test_a_predict_from_push_looks_up_the_adapter_dataset_once_it_is_ready(kit):
    push_pull(kit)
    metadata_write(kit, dataset_sources=[AG_NEWS, "alice/missing-data"])
    code, out, err = kit.run("push", "-m", "p", "--predict-from", 1)
    assert code == 6 and "alice/missing-data" in error_line(err)
    assert not kit.state.calls("StartBlobUpload")  # refused before the adapter was uploaded
    metadata_write(kit, dataset_sources=[AG_NEWS])
    out, err = push(kit, "--predict-from", 1, message="p")
    adapter = f"{kit.slug}-v1-adapter"
    order = [r[1].rsplit("/", 1)[-1] + ("(adapter)" if (r[2] or {}).get("datasetSlug") == adapter else "")
             for r in kit.state.requests if r[0] == "POST"]
    ready = max(i for i, m in enumerate(order) if m.startswith("GetDatasetStatus"))
    assert ready < order.index("GetDataset(adapter)", ready) < len(order) - 1 - order[::-1].index("SaveKernel")


# --------------------------------------------------------------------------------- 3. the whole reply
def test_invalid_sources_and_tags_in_the_reply_are_recorded_marked_and_shown(kit):
    kit.state.fail("GetModelInstance", 500, times=None)  # the preflight cannot check it: a note
    metadata_write(kit, keywords=["nlp", "made-up-tag"], model_sources=["google/bert/transformers/base/1"])
    code, out, err = kit.run("push", "-m", "x")
    line = error_line(err)
    assert code == 1 and len(kit.state.calls("GetModelInstance")) > 1  # retried, then left to SaveKernel's reply
    problem = "invalid_model_sources google/bert/transformers/base/1; invalid_tags made-up-tag"
    assert f"Kaggle made v1 of {USERNAME}/{kit.slug} but refused {problem}: recorded and marked" in line
    assert sent(kit) == (1, 0)
    row = kit.row(1)
    assert row["status"] == "QUEUED" and row["push_problem"] == problem and row["push_token"]
    code, out, err = kit.run("status", 1)
    assert code == 0 and f"warning: v1 is marked: Kaggle's reply to its push said {problem}" in err
    data = one_document(kit.run("versions", "--json")[1])["versions"][0]
    assert data["push_problem"] == problem and f"push problem: {problem}" in data["marks"]
    assert "push problem: invalid_model_sources" in kit.run("versions", "--wide")[1]  # whole, not shortened


def test_a_reply_naming_another_kernel_is_named_recorded_under_it_with_the_delete_command(kit):
    meant, made = "ag-news-lora", "ag-news-and-lora"
    kit.state.slug_of_title = lambda title: title.lower().replace("&", "and").replace(" ", "-")
    metadata_write(kit, id=f"your-kaggle-username/{meant}", title="AG News & LoRA")  # lorakit's slug: ag-news-lora
    code, out, err = kit.run("push", "-m", "x")
    line = error_line(err)
    assert code == 1 and f"Kaggle saved this push as {USERNAME}/{made} v1, not {USERNAME}/{meant}" in line
    assert f"delete it with: kaggle kernels delete {USERNAME}/{made}" in line and "set the title" in line
    assert sent(kit) == (1, 0) and kit.state.versions(USERNAME, made) and not kit.state.versions(USERNAME, meant)
    (row,) = kit.rows()
    assert (row["kernel_ref"], row["version"]) == (f"{USERNAME}/{made}", "1")
    assert row["push_problem"] == f"saved to {USERNAME}/{made}, not {USERNAME}/{meant}"
    code, out, err = kit.run("status", 1, "--kernel", f"{USERNAME}/{made}")
    assert code == 0 and "v1 is marked" in err


def test_a_title_that_makes_another_slug_is_refused_for_a_kernel_not_made_yet(kit):
    metadata_write(kit, title="Another Title Entirely")
    code, out, err = kit.run("push", "-m", "x")
    line = error_line(err)
    assert code == 6 and f"Kaggle would create {USERNAME}/another-title-entirely instead" in line
    assert f"set the title to {kit.slug.replace('-', ' ')!r}" in line and sent(kit) == (0, 0)
    metadata_write(kit, title=kit.slug.replace("-", " "))
    push(kit)
    metadata_write(kit, title="Another Title Entirely")  # an existing kernel takes the push by its id
    out, err = push(kit, "--set", "lora_r=4")
    assert "pushed v2" in out and len(versions(kit)) == 2


# ----------------------------------------------------------------------------- 4. Kaggle's refusals
def _session_count(kit):
    kit.state.gpu_session_limit = 1
    push(kit)  # v1 is QUEUED: it holds the one GPU session


def _quota_spent(kit):
    kit.state.fail("GetAcceleratorQuotaStatistics", 500, times=None)  # lorakit cannot weigh it first
    kit.state.quota = {"timeUsed": "108000s", "totalTimeAllowed": "108000s"}


REFUSALS = [
    (_session_count, "Maximum batch GPU session count of 1 reached.",
     "other runs hold every GPU session Kaggle allows at once (1): wait until one ends", 1),
    (lambda kit: setattr(kit.state, "phone_verified", False), "Phone verification is required",
     "verify your phone number at https://www.kaggle.com/settings", 1),
    (_quota_spent, "You have exceeded your weekly GPU quota.",
     "this week's GPU quota is spent: lorakit quota says when it refreshes", 1),
    (lambda kit: setattr(kit.state, "push_error", "Notebook not found"), "Notebook not found",
     "check the id in kernel-metadata.json (or --kernel)", 1),
    (lambda kit: kit.state.fail("SaveKernel", 404, message="Notebook not found"), "Notebook not found",
     "check the id in kernel-metadata.json (or --kernel)", 7),
]


@pytest.mark.parametrize("setup, said, fix, code", REFUSALS, ids=["session", "phone", "quota", "not-found", "404"])
def test_kaggles_push_refusals_are_mapped_to_their_fix_and_record_nothing(kit, setup, said, fix, code):
    setup(kit)
    before = len(kit.rows()) if kit.ledger.exists() else 0
    got, out, err = kit.run("push", "-m", "refused", "--set", "lora_r=2")
    line = error_line(err)
    assert got == code and f"Kaggle refused the push of {USERNAME}/{kit.slug}: {said}" in line and fix in line
    assert (len(kit.rows()) if kit.ledger.exists() else 0) == before  # recorded before sending, dropped
    assert len(kit.state.calls("SaveKernel")) == before + 1 and len(versions(kit)) == before


def test_rules_not_accepted_on_submit_is_the_403_with_the_rules_page_when_the_preflight_cannot_read(kit):
    push_pull(kit)
    kit.state.fail("GetCompetition", 500, times=None)
    kit.state.competition_info["userHasEntered"] = False
    code, out, err = kit.run("submit", 1)
    line = error_line(err)
    assert code == 1 and "You must accept this competition's rules" in line
    assert f"accept the competition's rules at {RULES}" in line
    assert sent(kit)[1] == 0 and kit.row(1)["pending_status"] == "" and kit.row(1)["pending_token"] == ""


# --------------------------------------------------------------------------------- 6. session timeout
def test_every_push_sends_a_session_timeout_within_kaggles_maximum(kit):
    def timeout_sent() -> int:
        return kit.state.calls("SaveKernel")[-1][2]["sessionTimeoutSeconds"]

    out, err = push(kit)
    assert timeout_sent() == (660 + 30) * 60 and kit.row(1)["session_timeout_s"] == "41400"
    assert "session timeout on Kaggle: 690 min" in out
    push(kit, "--set", "lora_r=4", "--session-timeout-minutes", "90")
    assert timeout_sent() == 90 * 60
    out, err = push(kit, "--set", "time_limit_minutes=720")
    assert timeout_sent() == 12 * 3600 and "a session timeout of 750 min is past Kaggle's 12 h session maximum" in err
    code, out, err = kit.run("push", "-m", "x", "--set", "lora_r=2", "--session-timeout-minutes", "0")
    assert code == 2 and "--session-timeout-minutes must be a positive number" in error_line(err)
    assert len(kit.state.calls("SaveKernel")) == 3
    code, out, err = kit.run("run", "-m", "r", "--set", "lora_r=2", "--session-timeout-minutes", "45")
    assert code == 0 and timeout_sent() == 45 * 60


def test_a_sweep_sends_and_records_its_session_timeout(kit):
    kit.state.quota = {"timeUsed": "0s", "totalTimeAllowed": "360000s"}
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4", "--set", "smoke=true", "--session-timeout-minutes", "60", "--yes")
    assert code == 0, err
    assert [c[2]["sessionTimeoutSeconds"] for c in kit.state.calls("SaveKernel")] == [3600, 3600]
    (path,) = (kit.repo / "submissions" / "sweeps").glob("sw-*.json")
    assert json.loads(path.read_text())["options"]["session_timeout_minutes"] == 60
    code, out, err = kit.run("sweep", "--resume", path.stem, "--session-timeout-minutes", "30")
    assert code == 2 and "drop --session-timeout-minutes" in error_line(err)


# ------------------------------------------------------------------------------------------------ 5. quota
def test_quota_counts_the_hours_held_by_running_sessions_as_kaggle_does(kit):
    kit.state.quota = {"timeUsed": "36000s", "timeReserved": "7200s", "totalTimeAllowed": "108000s",
                       "minimumTimeAllowed": "72000s"}
    code, out, err = kit.run("quota")
    assert code == 0 and "10.00 h used, 18.00 h left of 30.00 h" in out
    assert "held by running sessions: 2.00 h" in out and "minimum_time_allowed: 20.00 h" in out
    data = one_document(kit.run("quota", "--json")[1])
    assert [data[k] for k in ("used_hours", "reserved_hours", "left_hours", "total_hours", "minimum_hours")] == [
        10, 2, 18, 30, 20]
