def test_deployments_carry_the_cron_schedules_from_params(tmp_path):
    import yaml

    from flows.serve import deployments
    from metagan.config import PROJECT_ROOT

    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["schedules"]["adapt_cron"] = "*/5 * * * *"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    deps = {d.name: d for d in deployments(str(tmp_path / "uploads"), str(tmp_path / "params.yaml"))}
    assert set(deps) == {"hourly-adapt", "weekly-meta-train", "nightly-generate"}
    assert deps["hourly-adapt"].schedules[0].schedule.cron == "*/5 * * * *"
    assert deps["weekly-meta-train"].schedules[0].schedule.cron == params["schedules"]["meta_train_cron"]
    assert deps["hourly-adapt"].parameters["customers_dir"] == str(tmp_path / "uploads")
