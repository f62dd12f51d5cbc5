"""The dataset kind: data the spec reads. Planned when a planned resource consumes it; applying it records
the content hash it was read with (``<=`` in the plan)."""

from __future__ import annotations

import time
from typing import Mapping

from mlspec.core.kind import Change, Done, Node, Outcome, ResourceKind, register
from mlspec.core.types import Action, Reason, ReasonCode, Status, Verdict
from mlspec.records import DatasetRecord


class DatasetKind(ResourceKind):
    name = "dataset"
    order = 10
    standalone = False  # planned only when something planned reads it

    def nodes(self, spec) -> list[Node]:
        return [Node(ds.address, self.name, (), ds) for _n, ds in sorted(spec.datasets.items())]

    def gather(self, spec, nodes, state, ctx, facts) -> None:
        from mlspec.fingerprint import dataset_fact

        for node in nodes:
            facts.datasets[node.address] = dataset_fact(spec, node.item, ctx.cache)

    def decide(self, node: Node, record: Mapping | None, facts, known: Mapping, forced: bool) -> Change:
        fact = facts.datasets[node.address]
        outputs = {"data": fact["hash"]}
        after = {"hash": fact["hash"], "size": fact["size"]}
        contract = _contract_digest(node.item)
        if record is None:
            return Change(node.address, self.name, Action.READ, Verdict.NONE, (Reason(ReasonCode.DATA_NEW),),
                          fact["hash"], outputs, None, after, detail=fact)
        if record.get("hash") != fact["hash"]:
            return Change(node.address, self.name, Action.READ, Verdict.NONE,
                          (Reason(ReasonCode.DATA_CHANGED, "", record.get("hash"), fact["hash"]),), fact["hash"],
                          outputs, {"hash": record.get("hash"), "size": record.get("size")}, after, detail=fact)
        if contract != record.get("contract", ""):  # same data, another contract: check it again
            return Change(node.address, self.name, Action.READ, Verdict.NONE,
                          (Reason(ReasonCode.DEFINITION_CHANGED, "contract", record.get("contract") or None,
                                  contract or None),), fact["hash"], outputs, None, after, detail=fact)
        return Change(node.address, self.name, Action.NOOP, Verdict.NONE, (), fact["hash"], outputs, detail=fact)

    def removed(self, address: str, record: Mapping) -> Change | None:
        return None  # a dataset's record stays (it is what later runs were read with)

    def start(self, node: Node, change: Change, run) -> Done:
        f = change.detail
        now = time.time()
        record = DatasetRecord(f["hash"], f["size"], f["uri"], run.run_id).to_dict()
        if node.item.contract:  # checked before anything reads the data; a violation fails the dataset
            from mlspec.contracts import check_dataset

            report, _cached = check_dataset(run.spec, node.item, f["hash"])
            if not report.ok:
                head, _, rest = report.text().partition("\n")
                return Done(Outcome(node.address, Status.FAILED, started=now, finished=time.time(), error=head,
                                    reason=rest + "\n" + report.hint()))
            record["contract"] = _contract_digest(node.item)
        return Done(Outcome(node.address, Status.READ, started=now, finished=now), record,
                    outputs=change.outputs)

    def verdict_text(self, change: Mapping) -> str:
        return "read" if change["actions"][0] == "read" else "unchanged"


def _contract_digest(ds) -> str:
    if not ds.contract:
        return ""
    from mlspec.contracts import digest

    return digest(ds.contract)


KIND = register(DatasetKind())
