"""The demo's copy of the config: the shipped one plus the DR drill's scratch registry, which
backups leave out (a drill must never restore into what it backs up)."""

from __future__ import annotations

from pathlib import Path

from include.registry_ops.config import load_config


def test_the_demo_config_adds_the_drill_target_and_keeps_it_out_of_backups(tmp_path, monkeypatch):
    from devstack.demo import ROOT, demo_config

    monkeypatch.delenv("REGISTRY_OPS_CONFIG", raising=False)
    config = load_config(demo_config(tmp_path))
    shipped = load_config(ROOT / "config" / "registry-ops.yaml")
    names = [r.name for r in shipped.registries]
    assert config.dr.target == "oci-dr" and config.registry("oci-dr").conn_id == "oci_dr"
    assert config.backup.registries == names and "oci-dr" not in names
    assert Path(config.retention.policy_file).is_absolute() and Path(config.retention.policy_file).is_file()
