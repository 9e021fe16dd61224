"""`lorakit sweep`: arms checked and counted before any push, recorded before sent, run one after another,
ranked with paired tests, the best submitted within today's limit, and carried on after Ctrl-C without an arm
pushed twice."""
from __future__ import annotations

import json

import pytest

from lorakit.stats import holm, mcnemar_exact
from lorakit_fixtures import error_line, one_document, push, push_pull, versions


@pytest.fixture(autouse=True)
def roomy_quota(kit):
    """100 GPU hours left: every sweep here fits at its arms' time limits (660 min each), but where a test sets
    the quota itself."""
    kit.state.quota = {"timeUsed": "0s", "totalTimeAllowed": "360000s"}


def pushed_rs(kit) -> list:
    """The lora_r of every version the stand-in holds, in push order."""
    return [json.loads(v.text.split('r"""', 1)[1].split('"""', 1)[0]).get("lora_r") for v in versions(kit)]


def sweep_file(kit) -> dict:
    (path,) = (kit.repo / "submissions" / "sweeps").glob("sw-*.json")
    return json.loads(path.read_text())


def test_a_three_arm_sweep_ranks_its_arms_and_submits_the_best(kit):
    kit.accuracy = lambda cfg, number: {2: 0.80, 4: 0.90, 8: 0.85}[cfg.lora_r]
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4,8", "--set", "smoke=true", "-m", "ranks",
                             "--submit-best", "1", "--allow-smoke", "--yes")
    assert code == 0, err
    assert pushed_rs(kit) == [2, 4, 8] and len(kit.state.calls("SaveKernel")) == 3
    recorded = sweep_file(kit)
    sweep_id = recorded["id"]
    assert [a["sets"] for a in recorded["arms"]] == [["lora_r=2"], ["lora_r=4"], ["lora_r=8"]]
    assert recorded["shared_sets"] == ["smoke=true"] and recorded["options"]["submit_best"] == 1
    rows = kit.rows()
    assert [r["sweep_id"] for r in rows] == [sweep_id] * 3
    assert rows[0]["message"] == f"ranks [sweep {sweep_id} a1: lora_r=2]"
    assert all(r["status"] == "COMPLETE" and r["pulled_at"] for r in rows)
    table = out[out.index("ranked by validation accuracy"):].splitlines()
    assert [line.split()[1] for line in table[2:5]] == ["a2", "a3", "a1"]  # 0.90, 0.85, 0.80
    assert "best" in table[2] and "a2 beats a1" in table[4]  # 0.90 against 0.80 on 2000 rows is no noise
    assert len(kit.state.submissions) == 1 and kit.state.submissions[0].description.startswith("v2 ")
    assert "submitted v2 as submission" in out and kit.row(2)["submission_ref"]


def test_the_json_document_holds_the_arms_and_the_ranked_table(kit):
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4", "--set", "smoke=true", "--json", "--yes")
    assert code == 0, err
    data = one_document(out)
    assert [a["state"] for a in data["arms"]] == ["pulled", "pulled"]
    assert [r["name"] for r in data["ranked"]] == ["a2", "a1"]  # the default accuracy grows with the version
    best, other = data["ranked"]
    assert best["words"] == "best" and best["p_value"] is None
    assert other["best_wins"] - other["arm_wins"] == 2  # 1804 against 1802 of the 2000 rows right: a2 - a1
    assert other["p_value"] == pytest.approx(mcnemar_exact(other["best_wins"], other["arm_wins"]))
    assert other["p_holm"] == pytest.approx(other["p_value"])  # one comparison: nothing to correct
    assert data["gpu_hours_left"] == pytest.approx(100) and data["gpu_minutes"] == 2 * 660


def test_seeds_give_mean_spread_and_holm_corrected_tests(kit):
    kit.accuracy = lambda cfg, number: 0.8 + 0.05 * (cfg.lora_r == 4) + 0.02 * (cfg.lora_r == 8) + 0.01 * (cfg.seed % 2)
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4,8", "--set", "smoke=true", "--seeds", "2", "--json",
                             "--yes")
    assert code == 0, err
    assert len(versions(kit)) == 6
    seeds = [json.loads(v.text.split('r"""', 1)[1].split('"""', 1)[0]).get("seed") for v in versions(kit)]
    assert seeds == [42, 43] * 3
    ranked = one_document(out)["ranked"]
    assert [r["name"] for r in ranked] == ["a2", "a3", "a1"]
    for r in ranked:
        assert len(r["accuracies"]) == 2 and r["spread"] == pytest.approx(0.01 / 2 ** 0.5, abs=1e-3)
        assert r["mean"] == pytest.approx(sum(r["accuracies"]) / 2)
    raw = [r["p_value"] for r in ranked[1:]]
    assert [r["p_holm"] for r in ranked[1:]] == pytest.approx(holm(raw))
    assert ranked[1]["rows"] == 2 * 2000  # paired seed by seed, summed


def test_a_sweep_interrupted_after_its_first_arm_is_resumed_without_pushing_any_arm_twice(kit):
    kit.state.interrupt("SaveKernel", after=True, skip=1)  # Ctrl-C once the second arm's push went through
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4,8", "--set", "smoke=true", "--yes")
    assert code == 130, err
    sweep_id = sweep_file(kit)["id"]
    line = error_line(err, "interrupted")
    assert "interrupted while pushing; recorded as v2 UNCONFIRMED" in line
    assert line.endswith(f"carry on the whole sweep with: lorakit sweep --resume {sweep_id}; an arm already running "
                         "on Kaggle keeps running (and using GPU time) after Ctrl-C: Kaggle's API has no way to "
                         "cancel a version")
    assert pushed_rs(kit) == [2, 4] and kit.row(2)["status"] == "UNCONFIRMED"

    code, out, err = kit.run("sweep", "--resume", sweep_id)
    assert code == 0, err
    assert pushed_rs(kit) == [2, 4, 8] and len(kit.state.calls("SaveKernel")) == 3  # the second not sent again
    assert "a1: v1 pulled (pushed before)" in out and "a2: v2 pulled (pushed before)" in out
    assert [r["sweep_id"] for r in kit.rows()] == [sweep_id] * 3
    assert all(r["pulled_at"] for r in kit.rows())

    code, out, err = kit.run("sweep", "--resume", sweep_id)  # all done: nothing pushed, the table again
    assert code == 0 and len(kit.state.calls("SaveKernel")) == 3 and "ranked by validation accuracy" in out


def test_resume_refuses_the_flags_that_define_a_sweep_and_unknown_ids(kit):
    code, out, err = kit.run("sweep", "--resume", "sw-000000", "--grid", "lora_r=2,4")
    assert code == 2 and "drop --grid" in error_line(err)
    code, out, err = kit.run("sweep", "--resume", "sw-000000")
    assert code == 7 and "no sweep sw-000000" in error_line(err) and "recorded sweeps: none" in err
    code, out, err = kit.run("sweep", "--resume", "../ledger")
    assert code == 2 and "a sweep id such as" in error_line(err)
    assert not kit.state.requests


@pytest.mark.parametrize("argv, words", [
    (("--grid", "lora_r=2,0"), "a2 (lora_r=0): invalid config: lora_r must be"),
    (("--grid", "lora_r=2,x"), "a2 (lora_r=x): config key 'lora_r' expects int, got 'x'"),
    (("--grid", "lora_rank=2"), "unknown config key 'lora_rank'"),
])
def test_a_grid_value_failing_the_config_rules_is_refused_before_any_push(kit, argv, words):
    code, out, err = kit.run("sweep", *argv, "--set", "smoke=true")
    assert code == 1 and words in error_line(err) and "nothing pushed" in err
    assert not kit.state.calls("SaveKernel") and not (kit.repo / "submissions" / "sweeps").exists()


def test_an_arm_over_the_budget_refuses_the_whole_sweep(kit):
    code, out, err = kit.run("sweep", "--grid", "lora_r=8,64", "--set", "lora_targets=query,key,value")
    line = error_line(err)
    assert code == 1 and "a2 (lora_r=64)" in line and "exceed param_budget" in line and "a1" not in line
    assert not kit.state.requests and not kit.ledger.exists()


@pytest.mark.parametrize("argv, words", [
    ((), "a sweep needs arms"),
    (("--grid", "lora_r="), "--grid 'lora_r=' is empty"),
    (("--grid", "lora_r=2", "--grid", "lora_r=4"), "--grid lora_r is given twice"),
    (("--grid", "lora_r=2,4", "--set", "lora_r=8"), "lora_r is both an arm's setting and --set"),
    (("--grid", "lora_r=2,2"), "a1 and a2 are the same config"),
])
def test_an_empty_or_contradictory_grid_is_a_usage_error(kit, argv, words):
    code, out, err = kit.run("sweep", *argv, "--set", "smoke=true")
    assert code == 2 and words in error_line(err)
    assert not kit.state.requests


def test_submit_best_is_capped_by_the_submissions_left_today(kit):
    kit.state.allowed_now = 1
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4,8", "--set", "smoke=true", "--submit-best", "2",
                             "--allow-smoke", "--json", "--yes")
    assert code == 0, err
    assert len(kit.state.submissions) == 1 and kit.state.submissions[0].description.startswith("v3 ")
    data = one_document(out)
    assert [s["version"] for s in data["submissions"]["submitted"]] == [3] and "submission" not in data
    skipped = data["submissions"]["skipped"]
    assert skipped == ["1 of the best 2 (v2): only 1 submission left today"]  # one, not "1 submission(s)"
    assert "not submitted: 1 of the best 2 (v2): only 1 submission left today" in err


def test_submit_best_never_submits_a_smoke_run_without_allow_smoke(kit):
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4", "--set", "smoke=true", "--submit-best", "1")
    assert code == 6 and "--allow-smoke" in error_line(err) and not kit.state.requests


def test_dry_run_counts_the_arms_against_the_quota_and_pushes_nothing(kit, tmp_path):
    kit.state.quota = {"timeUsed": "30600s", "timeReserved": "7200s", "totalTimeAllowed": "108000s"}  # 19.5 h left
    plan = tmp_path / "arms.json"
    plan.write_text(json.dumps([{"lora_r": 4, "lr": 0.001}, {"lora_targets": "query,value"}]))
    code, out, err = kit.run("sweep", "--config", plan, "--grid", "lora_r=2", "--set", "smoke=true", "--dry-run")
    assert code == 0, err
    kmod = kit.kmod()
    arms = [line.split() for line in out.splitlines()[2:5]]
    for arm, settings, overrides in zip(arms, (["lora_r=2"], ["lora_r=4", "lr=0.001"], ["lora_targets=query,value"]),
                                        ({"lora_r": 2}, {"lora_r": 4, "lr": 0.001}, {"lora_targets": "query,value"})):
        count = kmod.param_breakdown(kmod.config_from_overrides({"smoke": True, **overrides}))["total"]
        assert arm[1:len(settings) + 2] == [*settings, f"{count:,}"]  # the exact count, arm by arm
    assert "GPU quota left this week: 19.5 h" in out and "up to 33.0 h in all for 3 arms to push" in out
    assert "time_limit_minutes; no COMPLETE run on NvidiaTeslaT4 yet" in out
    assert "may take 33.0 h of GPU time, but 19.5 h of the quota are left" in err and "--over-quota" in err
    assert not kit.state.calls("SaveKernel") and not kit.ledger.exists()
    assert not (kit.repo / "submissions" / "sweeps").exists()
    kit.state.fail("GetAcceleratorQuotaStatistics", 500, times=None)
    code, out, err = kit.run("sweep", "--grid", "lora_r=2", "--set", "smoke=true", "--dry-run")
    assert code == 0 and "GPU quota left this week: unknown" in out and "could not read the GPU quota" in err


def test_a_sweep_longer_than_the_quota_left_is_refused_unless_over_quota(kit):
    kit.state.quota = {"timeUsed": "30600s", "timeReserved": "7200s", "totalTimeAllowed": "108000s"}  # 19.5 h left
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4,8", "--set", "smoke=true", "--yes")
    line = error_line(err)
    assert code == 6 and "the sweep's 3 arms to push may take 33.0 h of GPU time, but 19.5 h" in line
    assert "(--over-quota pushes anyway)" in line
    assert not kit.state.calls("SaveKernel") and not (kit.repo / "submissions" / "sweeps").exists()
    kit.state.interrupt("SaveKernel", after=True, skip=1)  # two arms pushed, then Ctrl-C
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4,8", "--set", "smoke=true", "--over-quota", "--yes")
    assert code == 130 and "pushing anyway (--over-quota)" in err
    sweep_id = sweep_file(kit)["id"]
    kit.state.quota = {"timeUsed": "100080s", "timeReserved": "7200s", "totalTimeAllowed": "108000s"}  # 0.2 h left
    code, out, err = kit.run("sweep", "--resume", sweep_id)  # one arm to push, at a1's measured 21.5 min
    assert code == 6 and "the sweep's 1 arm to push may take 0.4 h" in error_line(err)
    assert "up to 0.4 h in all for 1 arm to push (median of 1 COMPLETE run on NvidiaTeslaT4)" in out
    assert len(versions(kit)) == 2
    kit.state.quota = {"timeUsed": "97200s", "timeReserved": "7200s", "totalTimeAllowed": "108000s"}  # 1 h left
    code, out, err = kit.run("sweep", "--resume", sweep_id)  # the arm pushed is in time_reserved, not weighed
    assert code == 0, err
    assert pushed_rs(kit) == [2, 4, 8]


def test_a_failed_arm_is_reported_and_the_others_go_on(kit):
    def run_hook(text, number):  # called before the stand-in copies status_script into the new version
        kit.state.status_script = ["QUEUED", "ERROR"] if number == 2 else ["QUEUED", "COMPLETE"]
        return kit.fake_run(text, number)

    kit.state.run_hook = run_hook
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4,8", "--set", "smoke=true", "--json", "--yes")
    assert code == 3 and "a2 (v2) failed: v2 ended ERROR" in err
    data = one_document(out)
    assert [a["state"][:6] for a in data["arms"]] == ["pulled", "failed", "pulled"]
    assert [r["name"] for r in data["ranked"]] == ["a3", "a1", "a2"] and data["ranked"][2]["mean"] is None
    assert len(versions(kit)) == 3


def test_resume_refuses_an_arm_whose_config_changed_since_it_was_recorded(kit):
    kit.state.interrupt("GetKernelSessionStatus")  # Ctrl-C while waiting for the first arm
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4", "--set", "smoke=true", "--yes")
    assert code == 130 and "resume with: lorakit status 1 --wait, then lorakit pull 1" in err
    sweep_id = sweep_file(kit)["id"]
    script = kit.repo / "kernel" / "agnews_lora.py"
    script.write_text(script.read_text().replace('r"""\n{}\n"""', 'r"""\n{"lr": 0.002}\n"""', 1))
    code, out, err = kit.run("sweep", "--resume", sweep_id)
    assert code == 1 and "a2's config_hash is now" in error_line(err) and "start a new sweep" in err
    assert len(versions(kit)) == 1 and kit.row(1)["pulled_at"]  # the first arm carried on, the second not pushed


@pytest.mark.slow
def test_from_plan_takes_the_first_rows_of_lorakit_plan(kit):
    code, out, err = kit.run("sweep", "--from-plan", "2", "--dry-run", "--json")
    assert code == 0, err
    planned = one_document(out)["planned"]
    d = kit.kmod().Config()
    assert planned[0]["sets"] == [f"head={d.head}", f"lora_targets={d.lora_targets}", f"lora_r={d.lora_r}",
                                  f"lora_alpha={d.lora_alpha:g}", f"lora_layers={d.lora_layers}"]  # plan's first row
    assert len(planned) == 2 and planned[1]["sets"] != planned[0]["sets"]
    assert all(a["trainable_params"] <= d.param_budget for a in planned) and not kit.state.calls("SaveKernel")


def test_parallel_pushes_the_next_arm_while_earlier_ones_run_and_learns_kaggles_limit(kit):
    kit.state.gpu_session_limit = 2  # what users report; lorakit learns it from the refusal
    kit.accuracy = lambda cfg, number: {2: 0.80, 4: 0.90, 8: 0.85}[cfg.lora_r]
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4,8", "--set", "smoke=true", "--parallel", "3", "--yes",
                             "--submit-best", "1", "--allow-smoke", "--json")
    assert code == 0, err
    data = one_document(out)
    posts = [r[1].rsplit("/", 1)[-1] for r in kit.state.requests if r[0] == "POST"]
    saves = [i for i, method in enumerate(posts) if method == "SaveKernel"]
    assert len(saves) == 4 and len(versions(kit)) == 3  # a3 was refused once: the two sessions were a1's and a2's
    assert saves[1] < posts.index("ListKernelSessionOutput")  # a2 pushed before a1 was pulled
    assert "note: a3 waits for a GPU session: Kaggle allows 2 at once (2 held by this sweep)" in err
    assert [a["state"] for a in data["arms"]] == ["pulled"] * 3 and pushed_rs(kit) == [2, 4, 8]
    assert [r["name"] for r in data["ranked"]] == ["a2", "a3", "a1"]  # ranked and submitted as one at a time
    assert len(kit.state.submissions) == 1 and kit.state.submissions[0].description.startswith("v2 ")


def test_parallel_is_resumed_without_pushing_any_arm_twice(kit):
    kit.state.interrupt("SaveKernel", after=True, skip=1)  # Ctrl-C once the second arm's push went through
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4,8", "--set", "smoke=true", "--parallel", "2", "--yes")
    assert code == 130 and "carry on the whole sweep with: lorakit sweep --resume" in err
    sweep_id = sweep_file(kit)["id"]
    assert len(versions(kit)) == 2 and not kit.rows()[0]["pulled_at"]  # both on Kaggle, neither waited for
    code, out, err = kit.run("sweep", "--resume", sweep_id, "--parallel", "2")
    assert code == 0, err
    assert pushed_rs(kit) == [2, 4, 8] and all(r["pulled_at"] for r in kit.rows())
    assert "carrying on v2" in out and "v3 pulled" in out


def test_a_session_count_refusal_makes_an_arm_wait_and_is_bounded(kit, monkeypatch):
    import threading
    import time

    monkeypatch.setenv("LORAKIT_POLL_START_S", "0.05")
    monkeypatch.setenv("LORAKIT_POLL_MAX_S", "0.05")
    kit.state.gpu_session_limit, kit.state.outside_sessions = 1, 1  # another notebook holds the one GPU

    def free_once_refused():  # the other run ends once the sweep's first push was refused
        deadline = time.monotonic() + 30
        while not kit.state.calls("SaveKernel") and time.monotonic() < deadline:
            time.sleep(0.01)
        kit.state.outside_sessions = 0

    freer = threading.Thread(target=free_once_refused)
    freer.start()
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4", "--set", "smoke=true", "--yes")
    freer.join()
    assert code == 0, err
    assert "note: a1 waits for a GPU session: Kaggle allows 1 at once (held by runs outside this sweep)" in err
    assert len(versions(kit)) == 2 and len(kit.state.calls("SaveKernel")) >= 3

    kit.state.outside_sessions = 1  # never freed: the wait ends at --timeout, nothing pushed
    code, out, err = kit.run("sweep", "--grid", "lora_r=8", "--set", "smoke=true", "--timeout", "0.5")
    line = error_line(err)
    assert code == 4 and "a1 waited" in line and "for a GPU session" in line and "lorakit sweep --resume" in line
    assert len(versions(kit)) == 2


# ------------------------------------------------------------------------------------------ the week's decisions
def test_an_arm_that_already_ran_is_taken_from_the_ledger_and_only_the_new_arms_are_pushed(kit):
    push_pull(kit, "--set", "smoke=true", "--set", "lora_r=4")  # v1: the baseline, run last week
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4,8", "--set", "smoke=true", "--yes", "--json")
    assert code == 0, err
    assert pushed_rs(kit) == [4, 2, 8] and len(kit.state.calls("SaveKernel")) == 3  # v1, then a1 and a3 only
    data = one_document(out)
    assert [a["reuses"] for a in data["planned"]] == [None, 1, None]
    assert [(a["version"], a["reused"]) for a in data["arms"]] == [(2, False), (1, True), (3, False)]
    assert sorted(r["versions"][0] for r in data["ranked"]) == [1, 2, 3]  # ranked with the others
    assert data["arms_to_push"] == 2  # what is pushed, each at v1's measured minutes (the same accelerator)
    assert data["gpu_minutes"] == pytest.approx(2 * float(kit.row(1)["run_minutes"]))
    assert sweep_file(kit)["arms"][1]["reuses"] == 1
    assert kit.row(1)["sweep_id"] == ""  # v1 stays what it was
    assert "a2: v1 pulled (taken from the ledger: it ran this config before; not pushed)" in err
    code, out, err = kit.run("sweep", "--grid", "lora_r=4,8", "--set", "smoke=true", "--dry-run")
    assert "v1 COMPLETE (taken from the ledger, not pushed)" in out and "v3 COMPLETE (taken from the ledger" in out
    assert "up to 0.0 h in all for 0 arms to push" in out
    code, out, err = kit.run("sweep", "--grid", "lora_r=4,8", "--set", "smoke=true", "--again", "--yes")
    assert code == 0 and pushed_rs(kit)[3:] == [4, 8]  # --again pushes them all


def test_an_arm_still_running_is_waited_for_and_reused(kit):
    kit.state.status_script = ["QUEUED", "RUNNING", "RUNNING", "COMPLETE"]
    push(kit, "--set", "smoke=true", "--set", "lora_r=4")  # pushed, not waited for: QUEUED in the ledger
    kit.state.status_script = ["QUEUED", "COMPLETE"]
    code, out, err = kit.run("sweep", "--grid", "lora_r=4,8", "--set", "smoke=true", "--yes")
    assert code == 0, err
    assert pushed_rs(kit) == [4, 8] and "v1 QUEUED (taken from the ledger, not pushed)" in out
    assert "--- a1 (lora_r=4): waiting for v1, which runs this config (taken from the ledger, not pushed)" in out
    assert kit.row(1)["status"] == "COMPLETE" and (kit.repo / "submissions" / "v1").is_dir()


def test_resume_retry_failed_pushes_the_failed_arms_again(kit):
    def run_hook(text, number):
        kit.state.status_script = ["QUEUED", "ERROR"] if number == 2 else ["QUEUED", "COMPLETE"]
        return kit.fake_run(text, number)

    kit.state.run_hook, kit.state.failure_message = run_hook, "CUDA out of memory"
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4,8", "--set", "smoke=true", "--yes")
    assert code == 3 and len(versions(kit)) == 3
    sweep_id = sweep_file(kit)["id"]
    code, out, err = kit.run("sweep", "--resume", sweep_id)
    assert code == 3 and len(versions(kit)) == 3  # without the flag: reported, not pushed
    assert (f"a2 (v2) failed: v2 ended ERROR (CUDA out of memory) (lorakit sweep --resume {sweep_id} --retry-failed "
            "pushes it again)") in err
    code, out, err = kit.run("sweep", "--resume", sweep_id, "--retry-failed", "--json")
    assert code == 0, err
    assert pushed_rs(kit) == [2, 4, 8, 4] and kit.row(4)["sweep_id"] == sweep_id
    ranked = one_document(out)["ranked"]
    assert next(r for r in ranked if r["name"] == "a2")["versions"] == [4]
    code, out, err = kit.run("sweep", "--grid", "lora_r=2", "--retry-failed")
    assert code == 2 and "--retry-failed carries on a recorded sweep" in error_line(err)


def test_a_comma_valued_knob_is_swept_with_bars_and_never_split(kit):
    code, out, err = kit.run("sweep", "--grid", "lora_targets=query,value|query,key,value,dense", "--grid",
                             "lora_r=4,8", "--set", "smoke=true", "--dry-run", "--json")
    assert code == 0, err
    assert [a["sets"] for a in one_document(out)["planned"]] == [
        ["lora_targets=query,value", "lora_r=4"], ["lora_targets=query,value", "lora_r=8"],
        ["lora_targets=query,key,value,dense", "lora_r=4"], ["lora_targets=query,key,value,dense", "lora_r=8"]]
    sent = len(kit.state.requests)
    code, out, err = kit.run("sweep", "--grid", "lora_targets=query,value", "--grid", "lora_r=4,8",
                             "--set", "smoke=true")
    line = error_line(err)
    assert code == 2 and "--grid lora_targets=query,value would split lora_targets, a comma-separated list, into " \
                         "query and value: separate its values with | instead" in line
    assert len(kit.state.requests) == sent


def test_a_sweep_asks_before_pushing_and_without_a_terminal_refuses_unless_yes(kit, monkeypatch):
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4", "--set", "smoke=true")
    line = error_line(err)
    assert code == 6 and "no terminal to ask on: add --yes" in line and "nothing recorded, nothing pushed" in line
    assert "a1   lora_r=2" in out  # the plan was shown
    assert not kit.state.calls("SaveKernel") and not (kit.repo / "submissions" / "sweeps").exists()

    class Terminal:
        def __init__(self, answer):
            self.answer = answer

        def isatty(self):
            return True

        def readline(self):
            return self.answer

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4", "--set", "smoke=true")
    assert code == 6 and "push 2 runs of this sweep now? [y/N] " in err  # the answer is typed on that line
    assert err.rstrip().endswith("lorakit: error: not confirmed: nothing recorded, nothing pushed")
    assert not kit.state.calls("SaveKernel") and not (kit.repo / "submissions" / "sweeps").exists()
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert kit.run("sweep", "--grid", "lora_r=2,4", "--set", "smoke=true")[0] == 0 and pushed_rs(kit) == [2, 4]
    monkeypatch.setattr("sys.stdin", Terminal(""))  # one run: nothing to ask
    assert kit.run("sweep", "--grid", "lora_r=16", "--set", "smoke=true")[0] == 0 and pushed_rs(kit) == [2, 4, 16]


def test_an_unknown_key_is_named_once_for_every_arm_that_has_it(kit):
    code, out, err = kit.run("sweep", "--grid", "lora_rank=2,4,8", "--set", "smoke=true")
    line = error_line(err)
    assert code == 1 and "a1 (lora_rank=2), a2 (lora_rank=4), a3 (lora_rank=8): unknown config key 'lora_rank'" in line
    assert line.count("unknown config key") == 1 and line.count("valid keys") == 1


def test_submit_best_warns_when_the_rows_cannot_tell_the_best_from_the_next(kit):
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4", "--set", "smoke=true", "--submit-best", "1",
                             "--allow-smoke", "--yes")
    assert code == 0, err
    ranked = out[out.index("ranked by validation accuracy"):]
    assert "noise: the 2,000 shared validation rows cannot tell a2 and a1 apart; roughly" in ranked
    assert "lorakit: warning: --submit-best 1 picks a2 on noise: the 2,000 shared validation rows" in err
    assert len(kit.state.submissions) == 1  # said, and submitted as asked


def test_the_checks_warnings_are_said_once_for_the_sweep(kit):
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4", "--set", "max_train_samples=600", "--yes")
    assert code == 0 and len(versions(kit)) == 2, err  # checked for the plan, then again by each arm's push
    assert err.count("these settings leave about 32 validation rows (val_fraction 0.05 of the 600 rows of "
                     "max_train_samples)") == 1
    assert err.count("holds the placeholder owner") == 1  # each arm's push notes it: said once too


def test_parallel_reuses_an_arm_that_already_ran_and_retries_a_failed_one(kit):
    """--parallel and the ledger's runs together: a finished config is ranked, not pushed; a failed arm is
    reported, then pushed again with --resume --retry-failed, still N at a time."""
    kit.accuracy = lambda cfg, number: {2: 0.80, 4: 0.90, 8: 0.85}[cfg.lora_r]
    push_pull(kit, "--set", "smoke=true", "--set", "lora_r=4")  # v1: lora_r=4 ran last week

    def run_hook(text, number):
        kit.state.status_script = ["QUEUED", "ERROR"] if number == 3 else ["QUEUED", "COMPLETE"]
        return kit.fake_run(text, number)

    kit.state.run_hook, kit.state.failure_message = run_hook, "CUDA out of memory"
    code, out, err = kit.run("sweep", "--grid", "lora_r=2,4,8", "--set", "smoke=true", "--parallel", "2", "--yes",
                             "--json")
    assert code == 3 and pushed_rs(kit) == [4, 2, 8]  # a2 is v1: not pushed
    arms = {a["label"]: a for a in one_document(out)["arms"]}
    assert (arms["a2"]["version"], arms["a2"]["reused"]) == (1, True)
    assert arms["a3"]["state"].startswith("failed: v3 ended ERROR")
    code, out, err = kit.run("sweep", "--resume", sweep_file(kit)["id"], "--parallel", "2", "--retry-failed")
    assert code == 0, err
    assert pushed_rs(kit) == [4, 2, 8, 8] and all(kit.row(v)["pulled_at"] for v in (1, 2, 4))
