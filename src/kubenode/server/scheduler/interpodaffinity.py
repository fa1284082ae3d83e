"""InterPodAffinity (upstream framework/plugins/interpodaffinity): required and
preferred pod affinity and anti-affinity, computed once per scheduling attempt over all
NodeInfos (PreFilter), then checked (Filter) and scored (Score) per node.

A term matches pods by labelSelector in the term's namespaces (default: the incoming
pod's namespace; namespaceSelector is treated as "all namespaces" when set and empty,
else ignored); its topologyKey names the node label that defines the domain.

Filter reasons: "node(s) didn't match pod affinity rules" (unresolvable),
"node(s) didn't match pod anti-affinity rules" and
"node(s) didn't satisfy existing pods anti-affinity rules".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubenode.server.controllers.labels import selector_matches
from kubenode.server.scheduler.nodeinfo import NodeInfo

Obj = dict[str, Any]

ERR_AFFINITY = "node(s) didn't match pod affinity rules"
ERR_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
ERR_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"


def has_required_anti_affinity(pod: Obj) -> bool:
    return bool(_terms(pod, "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution"))


def _terms(pod: Obj, kind: str, mode: str) -> list[Obj]:
    aff = ((pod.get("spec") or {}).get("affinity") or {}).get(kind) or {}
    out: list[Obj] = aff.get(mode) or []
    return out


def term_matches(term: Obj, owner: Obj, other: Obj) -> bool:
    """Does `other` match `term`, a term of `owner`'s (namespaces + labelSelector)?"""
    omd = other.get("metadata") or {}
    namespaces = term.get("namespaces") or []
    ns_sel = term.get("namespaceSelector")
    if not namespaces and not (ns_sel is not None and not ns_sel):
        namespaces = [(owner.get("metadata") or {}).get("namespace")]
    if namespaces and omd.get("namespace") not in namespaces:
        return False
    return selector_matches(term.get("labelSelector"), omd.get("labels"))


def _domain(info: NodeInfo, key: str) -> str | None:
    value = (info.node.get("metadata", {}).get("labels") or {}).get(key)
    return None if value is None else str(value)


class InterPodAffinity:
    def __init__(self, pod: Obj, infos: Sequence[NodeInfo]) -> None:
        self.pod = pod
        self.affinity = _terms(pod, "podAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
        self.anti = _terms(pod, "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
        self.pref = [
            (t, 1)
            for t in _terms(pod, "podAffinity", "preferredDuringSchedulingIgnoredDuringExecution")
        ]
        self.pref += [
            (t, -1)
            for t in _terms(
                pod, "podAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution"
            )
        ]
        # (term index) -> domains holding a matching pod
        self.aff_domains: list[set[str]] = [set() for _ in self.affinity]
        self.anti_domains: list[set[str]] = [set() for _ in self.anti]
        # (topologyKey, domain) pairs where an existing pod's anti-affinity rejects us
        self.existing_anti: set[tuple[str, str]] = set()
        self.any_match = [False for _ in self.affinity]
        self.active = bool(self.affinity or self.anti or self.pref)
        self.existing_terms = False
        for info in infos:
            for pkey in info.anti_affinity_pods:
                other = info.pods[pkey]
                if (other.get("metadata") or {}).get("deletionTimestamp"):
                    continue
                for term in _terms(
                    other, "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution"
                ):
                    self.existing_terms = True
                    key = term.get("topologyKey", "")
                    dom = _domain(info, key)
                    if dom is not None and term_matches(term, other, pod):
                        self.existing_anti.add((key, dom))
            if not (self.affinity or self.anti):
                continue
            for other in info.pods.values():
                if (other.get("metadata") or {}).get("deletionTimestamp"):
                    continue
                for i, term in enumerate(self.affinity):
                    if term_matches(term, pod, other):
                        self.any_match[i] = True
                        dom = _domain(info, term.get("topologyKey", ""))
                        if dom is not None:
                            self.aff_domains[i].add(dom)
                for i, term in enumerate(self.anti):
                    dom = _domain(info, term.get("topologyKey", ""))
                    if dom is not None and term_matches(term, pod, other):
                        self.anti_domains[i].add(dom)
        self.active = self.active or self.existing_terms

    def filter(self, info: NodeInfo) -> tuple[str, bool] | None:
        """(reason, unresolvable) when the node does not fit."""
        for i, term in enumerate(self.affinity):
            dom = _domain(info, term.get("topologyKey", ""))
            if dom is None:
                return ERR_AFFINITY, True
            if dom not in self.aff_domains[i]:
                # the first pod of a group that matches its own term may go anywhere
                if not any(self.any_match) and term_matches(term, self.pod, self.pod):
                    continue
                return ERR_AFFINITY, True
        for i, term in enumerate(self.anti):
            dom = _domain(info, term.get("topologyKey", ""))
            if dom is not None and dom in self.anti_domains[i]:
                return ERR_ANTI_AFFINITY, False
        for key, dom in self.existing_anti:
            if _domain(info, key) == dom:
                return ERR_EXISTING_ANTI_AFFINITY, False
        return None

    def score(self, info: NodeInfo, infos: Sequence[NodeInfo]) -> float:
        """Sum of weights of preferred terms matched by pods in this node's domains."""
        total = 0.0
        for wterm, sign in self.pref:
            term = wterm.get("podAffinityTerm") or {}
            dom = _domain(info, term.get("topologyKey", ""))
            if dom is None:
                continue
            for other_info in infos:
                if _domain(other_info, term.get("topologyKey", "")) != dom:
                    continue
                n = sum(1 for p in other_info.pods.values() if term_matches(term, self.pod, p))
                total += sign * int(wterm.get("weight", 0)) * n
        return total
