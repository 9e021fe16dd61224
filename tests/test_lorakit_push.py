"""`lorakit push`: dry runs and predict-from, every check before sending (budget, keys, internet off, quota, reruns),
and never a duplicate or an unrecorded push (lost replies, signals, a full disk)."""
from __future__ import annotations

import dataclasses
import json
import tempfile

import pytest

from lorakit_fixtures import (
    SIGNALS,
    USERNAME,
    error_line,
    full_disk_after,
    lorakit_started,
    push,
    push_pull,
    signalled_in_flight,
    versions,
)


def overrides_of(kit, number: int) -> dict:
    return kit.kmod().read_overrides_block(versions(kit)[number - 1].text)


AG_NEWS = "amananandrai/ag-news-classification-dataset"


def metadata_write(kit, **changes) -> None:
    meta = {**kit.metadata, **changes}
    (kit.repo / "kernel-metadata.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def test_push_dry_run_and_predict_from(kit):
    code, out, err = kit.run("push", "-m", "dry", "--dry-run", "--build-dir", "build", "--set", "lora_r=4")
    assert code == 0, err
    assert not kit.state.requests and not kit.ledger.exists()
    meta = json.loads((kit.repo / "build" / "kernel-metadata.json").read_text())
    assert meta["code_file"] == "agnews_lora.py"
    text = (kit.repo / "build" / "agnews_lora.py").read_text()
    assert kit.kmod().read_overrides_block(text) == {"lora_r": 4}
    compile(text, "agnews_lora.py", "exec")

    version = push_pull(kit)
    code, out, err = kit.run("push", "-m", "predict only", "--predict-from", version, "--set", "prior_correction=em",
                             "--accelerator", "NvidiaTeslaT4")
    assert code == 0, err
    assert "latest output" not in err  # the adapter is version N's own, carried by a dataset
    save = kit.state.calls("SaveKernel")[-1][2]
    dataset = f"{USERNAME}/{kit.slug}-v{version}-adapter"
    assert not save.get("kernelDataSources") and dataset in save["datasetDataSources"]
    assert save["machineShape"] == "NvidiaTeslaT4"
    block = kit.kmod().read_overrides_block(save["text"])
    assert block["adapter_from"] == f"/kaggle/input/{kit.slug}-v{version}-adapter" and block["prior_correction"] == "em"
    assert kit.row(2)["predict_from"] == str(version) and kit.row(2)["adapter_dataset"] == dataset


def test_push_no_run_records_a_saved_version(kit):
    code, out, err = kit.run("push", "-m", "save only", "--no-run")
    assert code == 0 and "saved (not run) v1" in out
    assert kit.state.calls("SaveKernel")[-1][2]["kernelExecutionType"] == "QUICK_SAVE"
    assert kit.row(1)["status"] == "NEW_SCRIPT"


def test_push_refuses_over_budget_and_bad_keys_before_any_network_call(kit):
    code, out, err = kit.run("push", "-m", "too big", "--set", "lora_r=64", "--set", "lora_targets=query,key,value")
    assert code == 1 and "exceed param_budget" in err and len(err.strip().splitlines()) == 1
    code, out, err = kit.run("push", "-m", "typo", "--set", "lora_rank=8")
    assert code == 1 and "unknown config key 'lora_rank'" in err
    assert "Traceback" not in err
    assert not kit.state.requests and not kit.ledger.exists()


def test_push_refuses_a_build_copy_that_does_not_compile(kit, monkeypatch):
    from lorakit import kernel as door

    monkeypatch.setattr(door, "render_overrides",
                        lambda kmod, text, overrides: text.replace("OVERRIDES_JSON = r", "OVERRIDES_JSON = (r", 1))
    code, out, err = kit.run("push", "-m", "x")
    assert code == 1 and "does not compile" in err
    assert not kit.state.requests and not kit.ledger.exists()


def test_push_error_field_is_a_failure(kit):
    kit.state.push_error = "Notebook is too large"
    code, out, err = kit.run("push", "-m", "x")
    assert code == 1 and "Kaggle refused the push" in err and "Notebook is too large" in err
    assert kit.rows() == []  # recorded before sending, dropped once refused


def test_a_message_that_is_not_utf8_is_refused_before_sending(kit):
    message = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Python makes of such a byte in argv
    code, out, err = kit.run("push", "-m", message)
    assert code == 2 and "not UTF-8" in error_line(err)
    assert not kit.state.requests and not kit.ledger.exists()
    push_pull(kit)
    code, out, err = kit.run("submit", 1, "-m", message)
    assert code == 2 and "not UTF-8" in error_line(err) and not kit.state.calls("StartSubmissionUpload")


@pytest.mark.parametrize("folder", ["kernel", ".", "sub/.."])
def test_a_build_dir_over_the_sources_is_refused(kit, folder):
    before = (kit.repo / "kernel" / "agnews_lora.py").read_bytes(), (kit.repo / "kernel-metadata.json").read_bytes()
    code, out, err = kit.run("push", "-m", "x", "--dry-run", "--build-dir", folder, "--set", "lora_r=4")
    assert code == 2 and "would overwrite" in error_line(err)
    assert before == ((kit.repo / "kernel" / "agnews_lora.py").read_bytes(),
                      (kit.repo / "kernel-metadata.json").read_bytes())


def test_a_dry_run_leaves_no_temporary_folder(kit, monkeypatch, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    code, out, err = kit.run("push", "-m", "x", "--dry-run")
    assert code == 0 and "nothing pushed" in out and not list(scratch.iterdir())


def test_a_predict_from_dry_run_counts_the_adapters_config(kit):
    push_pull(kit, "--set", "lora_r=4")
    code, out, err = kit.run("push", "-m", "p", "--predict-from", 1, "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out)["trainable_params"] == int(kit.row(1)["trainable_params"])
    code, out, err = kit.run("check", "--json")
    assert json.loads(out)["trainable_params"] != int(kit.row(1)["trainable_params"])


def test_push_removes_its_build_folder_unless_asked_to_keep_it(kit, monkeypatch, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out, err = push(kit)
    assert not list(scratch.iterdir()) and "build folder" not in out

    out, err = push(kit, "--build-dir", "build", "--again")  # the same config again: on purpose
    text = (kit.repo / "build" / "agnews_lora.py").read_text()
    assert text == versions(kit)[1].text  # what was checked is what was pushed
    assert text.count("# lorakit push token: ") == 1 and kit.row(2)["push_token"] in text
    compile(text, "agnews_lora.py", "exec")
    assert kit.row(1)["push_token"] != kit.row(2)["push_token"]


def test_a_config_already_run_to_complete_needs_again(kit):
    push_pull(kit)
    code, out, err = kit.run("push", "-m", "same")
    line = error_line(err)
    assert code == 6 and line.startswith("lorakit: error: v1 already ran config_hash") and "--again" in line
    assert len(kit.state.calls("SaveKernel")) == 1
    out, err = push(kit, "--again", message="same")
    assert "pushed v2" in out


def test_a_push_over_the_competitions_rule_names_it(kit):
    """A budget raised above 1,000,000 is for experiments: the push goes ahead and says the entry is invalid."""
    code, out, err = kit.run("push", "-m", "big", "--set", "param_budget=2000000", "--set", "lora_r=40")
    assert code == 0, err
    assert ("param_budget 2,000,000 is above the competition's rule of at most 1,000,000 trainable parameters; "
            "this config breaks it: not a valid entry") in err
    code, out, err = kit.run("push", "-m", "small", "--set", "lora_r=4")
    assert code == 0 and "competition's rule" not in err


def test_a_run_longer_than_the_quota_left_is_refused_before_pushing(kit):
    kit.state.quota = {"timeUsed": "86400s", "timeReserved": "14400s", "totalTimeAllowed": "108000s"}  # 2 h left
    code, out, err = kit.run("push", "-m", "long")
    line = error_line(err)
    assert code == 6 and "may take 11.0 h of GPU time, but 2.0 h of the quota are left this week" in line
    assert "time_limit_minutes; no COMPLETE run on NvidiaTeslaT4 yet" in line and "--over-quota" in line
    assert not kit.state.calls("SaveKernel") and not kit.ledger.exists()
    out, err = push(kit, "--over-quota")
    assert "lorakit: warning: the run (660 min" in err and "pushing anyway (--over-quota)" in err and "pushed v1" in out
    kit.state.quota = {"timeUsed": "0s", "totalTimeAllowed": "108000s"}
    out, err = push(kit, "--set", "lora_r=4")
    assert "GPU time" not in err
    kit.state.fail("GetAcceleratorQuotaStatistics", 500, times=None)
    out, err = push(kit, "--set", "lora_r=2")
    assert "pushed v3" in out and "note: could not read the GPU quota" in err and "lorakit: error" not in err


def test_the_estimate_is_the_median_of_this_kernels_complete_runs_on_the_accelerator(kit):
    for r in (2, 4, 8):
        push_pull(kit, "--set", f"lora_r={r}")  # each ran 21.5 min (metrics.json's total_seconds 1290)
    kit.ledger.write_text(kit.ledger.read_text().replace("21.5", "30.0", 1))  # v1 took longer: 21.5 is the median
    kit.state.quota = {"timeUsed": "106920s", "totalTimeAllowed": "108000s"}  # 0.3 h (18 min) left
    code, out, err = kit.run("push", "-m", "r=16", "--set", "lora_r=1")
    line = error_line(err)
    assert code == 6 and "the run (22 min: median of 3 COMPLETE runs on NvidiaTeslaT4) may take 0.4 h" in line
    code, out, err = kit.run("push", "-m", "elsewhere", "--set", "lora_r=1", "--accelerator", "NvidiaL4X1")
    assert code == 6 and "660 min: time_limit_minutes; no COMPLETE run on NvidiaL4X1 yet" in error_line(err)
    kit.state.quota = {"timeUsed": "104400s", "totalTimeAllowed": "108000s"}  # 1 h left: the measured run fits
    out, err = push(kit, "--set", "lora_r=1")
    assert "pushed v4" in out and "GPU time" not in err
    assert len(kit.state.calls("SaveKernel")) == 4


def test_internet_off_refuses_a_hub_model_before_any_network_call(kit, minilm_path):
    metadata_write(kit, enable_internet=False)
    for argv in (("check",), ("push", "-m", "x", "--dry-run"), ("push", "-m", "x"), ("run", "-m", "x")):
        code, out, err = kit.run(*argv)
        line = error_line(err)
        assert code == 1 and "enable_internet is false" in line and "model roberta-base is a Hugging Face hub id" in line
        assert "model_sources" in line and "--set model=/kaggle/input/" in line, line
    assert not kit.state.requests and not kit.ledger.exists()
    code, out, err = kit.run("check", "--set", f"model={minilm_path}")  # a folder, as /kaggle/input/... is there
    assert code == 0, err  # and the AG News CSVs are attached: train_data=auto finds them offline
    assert kit.run("check", "--set", "smoke=true")[0] == 0  # a tiny random encoder, synthetic data
    metadata_write(kit, enable_internet=True)
    assert kit.run("check")[0] == 0


@pytest.mark.parametrize("sources, sets, refused, warned", [
    ([AG_NEWS], ("train_data=hf:ag_news",), "train_data hf:ag_news downloads from the Hugging Face hub", ""),
    ([], (), "train_data auto falls back to hf:ag_news", ""),
    (["alice/my-ag-news"], (), "", "unless one of alice/my-ag-news does"),
    ([AG_NEWS], ("train_data=/kaggle/input/x/train.csv",), "", ""),
])
def test_internet_off_and_the_training_data(kit, minilm_path, sources, sets, refused, warned):
    metadata_write(kit, enable_internet=False, dataset_sources=sources)
    argv = ["check", "--set", f"model={minilm_path}"] + [a for s in sets for a in ("--set", s)]
    code, out, err = kit.run(*argv)
    if refused:
        line = error_line(err)
        assert code == 1 and refused in line and f"attach the AG News CSVs {AG_NEWS} in dataset_sources" in line
    else:
        assert code == 0, err
        assert (warned in err) if warned else "hf:ag_news" not in err


def test_internet_off_predict_from_loads_the_encoder_its_adapter_was_trained_on(kit, minilm_path):
    metadata_write(kit, enable_internet=False)
    push_pull(kit, "--set", f"model={minilm_path}")
    code, out, err = kit.run("push", "-m", "p", "--predict-from", 1, "--dry-run")
    assert code == 0, err  # the adapter's kit.json names the attached model
    kit_json = kit.repo / "submissions" / "v1" / "adapter" / "kit.json"
    data = json.loads(kit_json.read_text())
    data["config"]["model"] = "roberta-base"
    kit_json.write_text(json.dumps(data))
    code, out, err = kit.run("push", "-m", "p", "--predict-from", 1, "--dry-run")
    assert code == 1 and "model roberta-base is a Hugging Face hub id" in error_line(err)


def test_predict_from_pins_each_versions_own_adapter_and_the_kernel_refuses_another(kit, tmp_path):
    push_pull(kit, "--set", "lora_r=4")
    push_pull(kit, "--set", "lora_r=8")
    base = kit.repo / "submissions" / "v1" / "adapter" / "base"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "roberta"}')  # a smoke adapter keeps its tiny encoder
    kmod = kit.kmod()
    digests = {n: kmod.adapter_digest(kit.repo / "submissions" / f"v{n}" / "adapter") for n in (1, 2)}
    assert digests[1] != digests[2]

    for n, pushed in ((1, 3), (2, 4)):
        code, out, err = kit.run("push", "-m", f"from v{n}", "--predict-from", n)
        assert code == 0, err
        dataset = f"{kit.slug}-v{n}-adapter"
        block = overrides_of(kit, pushed)
        assert block["adapter_from"] == f"/kaggle/input/{dataset}" and block["adapter_sha256"] == digests[n]
        assert f"{USERNAME}/{dataset}" in versions(kit)[pushed - 1].request["datasetDataSources"]
        row = kit.row(pushed)
        assert (row["predict_from"], row["adapter_dataset"], row["adapter_sha256"]) == (
            str(n), f"{USERNAME}/{dataset}", digests[n])
        stored = kit.state.datasets[(USERNAME, dataset)]
        assert stored.private and digests[n] in stored.description
        local = kit.repo / "submissions" / f"v{n}" / "adapter"
        assert stored.versions[-1] == {str(p.relative_to(local)): p.read_bytes() for p in local.rglob("*")
                                       if p.is_file()}
    assert len(kit.state.calls("CreateDataset")) == 2 and "(created)" in out

    # Kaggle mounts v1's dataset: the kernel accepts it for v3 and refuses it for v4, pinned to v2's adapter
    mount = tmp_path / "kaggle" / "input" / f"{kit.slug}-v1-adapter"
    for name, content in kit.state.dataset_files(USERNAME, f"{kit.slug}-v1-adapter").items():
        (mount / name).parent.mkdir(parents=True, exist_ok=True)
        (mount / name).write_bytes(content)
    for pushed in (3, 4):
        cfg = kmod.config_from_overrides({**overrides_of(kit, pushed), "adapter_from": str(mount)})
        if pushed == 3:
            assert kmod.model_config(cfg).lora_r == 4  # v1's training config, read beside its adapter
        else:
            with pytest.raises(kmod.KernelError, match=f"not the adapter_sha256 {digests[2]}"):
                kmod.model_config(cfg)

    uploads = len(kit.state.calls("StartBlobUpload"))
    code, out, err = kit.run("push", "-m", "again", "--predict-from", 1, "--again")  # the same files: reused
    assert code == 0 and "(reused)" in out and len(kit.state.calls("StartBlobUpload")) == uploads
    (base / "config.json").write_text('{"model_type": "roberta", "changed": true}')
    code, out, err = kit.run("push", "-m", "changed", "--predict-from", 1)  # other files: a new version of it
    assert code == 0 and "(new version)" in out and len(kit.state.calls("CreateDatasetVersion")) == 1
    assert overrides_of(kit, 6)["adapter_sha256"] == kmod.adapter_digest(base.parent) != digests[1]
    assert len(kit.state.datasets[(USERNAME, f"{kit.slug}-v1-adapter")].versions) == 2


def test_predict_from_upload_reply_lost_is_not_created_twice(kit):
    push_pull(kit)
    kit.state.fail("CreateDataset", 502, after=True)
    kit.state.dataset_status_script = ["NOT_YET_PERSISTED", "BLOBS_RECEIVED", "READY"]
    code, out, err = kit.run("push", "-m", "from v1", "--predict-from", 1)
    assert code == 0, err
    assert len(kit.state.calls("CreateDataset")) == 1 and "went through: not sent again" in err
    assert len(kit.state.calls("GetDatasetStatus")) == 3  # pushed only once the dataset was READY
    assert kit.state.requests.index(kit.state.calls("GetDatasetStatus")[-1]) < kit.state.requests.index(
        kit.state.calls("SaveKernel")[-1])


def test_predict_from_needs_the_pulled_adapter(kit):
    code, out, err = kit.run("push", "-m", "x", "--predict-from", 5)
    assert code == 7 and "submissions/v5/adapter/kit.json does not exist: pull v5 first" in err
    assert not kit.state.requests


@pytest.mark.parametrize("fault", ["502", "drop", "stall"])
def test_push_processed_then_reply_lost_is_not_sent_again(kit, monkeypatch, fault):
    monkeypatch.setenv("LORAKIT_TIMEOUT_S", "0.5")
    if fault == "502":
        kit.state.fail("SaveKernel", 502, after=True)
    else:
        getattr(kit.state, fault)("SaveKernel", after=True)
    code, out, err = kit.run("push", "-m", "reply lost")
    assert code == 0, err
    assert len(kit.state.calls("SaveKernel")) == 1 and len(versions(kit)) == 1
    assert "pushed v1" in out and "went through as v1: not sent again" in err
    row = kit.row(1)
    assert row["status"] == "QUEUED" and row["push_token"].startswith("lk-")
    assert f"# lorakit push token: {row['push_token']}" in versions(kit)[0].text


def test_push_502_before_processing_is_sent_again_once(kit):
    kit.state.fail("SaveKernel", 502)
    code, out, err = kit.run("push", "-m", "x")
    assert code == 0, err
    assert len(kit.state.calls("SaveKernel")) == 2 and len(versions(kit)) == 1
    assert "checking whether it went through" in err and "pushed v1" in out


def test_push_unconfirmed_is_recorded_then_confirmed_by_status(kit):
    kit.state.fail("SaveKernel", 502, after=True)
    kit.state.fail("GetKernel", 500, times=None, skip=1)  # the read before the push works, the check does not
    code, out, err = kit.run("push", "-m", "x")
    assert code == 5
    line = error_line(err)
    assert "UNCONFIRMED" in line and "lorakit status 1" in line and "may have gone through" in line
    assert len(kit.state.calls("SaveKernel")) == 1 and len(versions(kit)) == 1  # never resent
    row = kit.row(1)
    assert row["status"] == "UNCONFIRMED" and row["push_token"] in versions(kit)[0].text

    kit.state.faults.clear()
    code, out, err = kit.run("status", 1)
    assert code == 0 and "v1 QUEUED" in out, err
    assert kit.row(1)["status"] == "QUEUED"


def test_push_unconfirmed_that_another_push_overtook_is_found_by_its_token(kit):
    push(kit)
    kit.state.fail("SaveKernel", 502, after=True)
    kit.state.fail("GetKernel", 500, times=None, skip=1)
    code, out, err = kit.run("push", "-m", "mine", "--set", "lora_r=4")
    assert code == 5 and kit.row(2)["status"] == "UNCONFIRMED"
    kit.state.faults.clear()
    mine = versions(kit).pop()  # another push (the web editor, a teammate) took v2 just before mine: mine is v3
    other = dataclasses.replace(mine, text="# another push")
    mine.number = 3
    versions(kit).extend([other, mine])
    code, out, err = kit.run("status", 2)
    assert code == 1 and "went through as v3" in error_line(err) and "lorakit status 3" in err
    assert kit.row(3)["message"] == "mine" and kit.row(3)["status"] == "QUEUED" and len(kit.rows()) == 2
    assert len(kit.state.calls("SaveKernel")) == 2  # nothing sent again


def test_push_unconfirmed_that_never_arrived(kit, monkeypatch):
    kit.state.fail("SaveKernel", 502)
    kit.state.fail("GetKernel", 500, times=None, skip=1)
    code, out, err = kit.run("push", "-m", "x")
    assert code == 5 and not versions(kit) and kit.row(1)["status"] == "UNCONFIRMED"

    kit.state.faults.clear()
    monkeypatch.setenv("LORAKIT_CONFIRM_S", "0")  # no grace for Kaggle to show it: not found is final at once
    code, out, err = kit.run("pull", 1)
    assert code == 1 and "never reached Kaggle" in error_line(err)
    assert kit.row(1)["status"] == "NOT_PUSHED" and not (kit.repo / "submissions" / "v1").exists()
    out, err = push(kit, message="again")
    assert "pushed v1" in out and "row for v1; it is replaced" in err
    assert kit.row(1)["status"] == "QUEUED" and kit.row(1)["message"] == "again"


@pytest.mark.slow
@pytest.mark.parametrize("signum, processed", [(SIGNALS[0], True), (SIGNALS[-1], False)],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_signal_during_a_push_leaves_a_row_the_next_command_settles(kit, monkeypatch, signum, processed):
    kit.state.stall("SaveKernel", after=processed)
    proc = lorakit_started(kit, "push", "-m", "signalled")
    code, err = signalled_in_flight(kit, proc, lambda: versions(kit) if processed else kit.state.calls("SaveKernel"),
                                    signum)
    assert code == 130 and "interrupted while pushing; recorded as v1 UNCONFIRMED" in err, err
    row = kit.row(1)
    assert row["status"] == "UNCONFIRMED" and row["push_token"].startswith("lk-")
    assert len(versions(kit)) == int(processed)

    monkeypatch.setenv("LORAKIT_CONFIRM_S", "0")  # no grace for Kaggle to show it: not found is final at once
    code, out, err = kit.run("status")
    if processed:
        assert code == 0 and "v1 QUEUED" in out and kit.row(1)["status"] == "QUEUED"
        assert row["push_token"] in versions(kit)[0].text
    else:
        assert code == 1 and "never reached Kaggle" in error_line(err) and kit.row(1)["status"] == "NOT_PUSHED"
    assert len(kit.state.calls("SaveKernel")) == 1  # settled without a second send


def test_full_disk_after_a_push_leaves_it_sending_and_the_retry_does_not_resend(kit, monkeypatch):
    with monkeypatch.context() as mp:
        full_disk_after(mp, kit, "SaveKernel")
        code, out, err = kit.run("push", "-m", "full disk")
    assert code == 1
    line = error_line(err)
    assert "No space left on device" in line and "stays SENDING" in line and "do not push it again" in line
    (row,) = kit.rows()
    assert row["status"] == "SENDING" and row["version"] == "" and row["push_token"] in versions(kit)[0].text

    code, out, err = kit.run("push", "-m", "full disk")  # the obvious retry finds it first
    assert code == 6 and "v1 already ran config_hash" in error_line(err) and "--again" in err
    assert len(kit.state.calls("SaveKernel")) == 1
    assert kit.row(1)["status"] == "QUEUED" and kit.row(1)["message"] == "full disk"
