#!/usr/bin/env python3
"""Generate crds.yaml: the CustomResourceDefinitions of multigres.com/v1alpha1.

Usage (from the repository root):

    python3 config/crd/gen-crds.py > crds.yaml

Only the Python 3 standard library is needed. The schemas are written by hand
here, once per shape, and reused; the output is fully expanded YAML (no
anchors) so every consumer, including the operator's own libyaml loader, reads
it the same way. docs/api.md explains the API, the CEL rules and why the
user-edited kinds carry no `default:` values.

Field names, enums, bounds and rules follow the reference operator's public API
(numtide/multigres-operator, api/v1alpha1) so that its users' manifests apply
unchanged; where the reference's versions disagree (zone vs zoneId, pool type
readOnly), the schema accepts the union, and the operator refuses with a
message what Multigres cannot do (readOnly, a cell's metadata).
"""

import json
import re
import sys

GROUP = "multigres.com"
VERSION = "v1alpha1"
# Stamped on every CRD (multigres.com/schema-version). Raise it, and
# MGOP_CRD_SCHEMA in multigres-op.c with it, when the operator starts relying
# on a schema change: an operator then refuses to reconcile against older CRDs.
SCHEMA_VERSION = 3  # 2: observability.otlpMetricsEndpoint; 3: pools.*.{postgres,multipooler}.runAsUser/runAsGroup

# ---------------------------------------------------------------------------
# Small schema builders
# ---------------------------------------------------------------------------


def rule(expr, message, **kw):
    r = {"rule": expr, "message": message}
    r.update(kw)
    return r


def S(desc, **kw):
    """A string."""
    s = {"description": desc, "type": "string"}
    s.update(kw)
    return s


def I32(desc, **kw):
    s = {"description": desc, "type": "integer", "format": "int32"}
    s.update(kw)
    return s


def I64(desc, **kw):
    s = {"description": desc, "type": "integer", "format": "int64"}
    s.update(kw)
    return s


def B(desc):
    return {"description": desc, "type": "boolean"}


def O(desc, props, required=None, rules=None, **kw):
    """An object with known properties."""
    s = {"description": desc, "type": "object", "properties": props}
    if required:
        s["required"] = list(required)
    if rules:
        s["x-kubernetes-validations"] = list(rules)
    s.update(kw)
    return s


def A(desc, items, rules=None, **kw):
    s = {"description": desc, "type": "array", "items": items}
    if rules:
        s["x-kubernetes-validations"] = list(rules)
    s.update(kw)
    return s


def M(desc, values, rules=None, **kw):
    """A map with string keys."""
    s = {"description": desc, "type": "object", "additionalProperties": values}
    if rules:
        s["x-kubernetes-validations"] = list(rules)
    s.update(kw)
    return s


def with_rules(schema, rules, cel):
    if cel and rules:
        schema = dict(schema)
        schema["x-kubernetes-validations"] = list(rules)
    return schema


# ---------------------------------------------------------------------------
# Scalars shared by many kinds
# ---------------------------------------------------------------------------

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
            r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
DURATION = "^([0-9]+(\\.[0-9]+)?(ns|us|\u00b5s|\u03bcs|ms|s|m|h))+$"


def cell_name(desc):
    return S(desc, minLength=1, maxLength=30, pattern=DNS_LABEL)


def template_ref(desc):
    return S(desc, minLength=1, maxLength=63, pattern=DNS_SUBDOMAIN)


def image_ref(desc):
    return S(desc, minLength=1, maxLength=512)


def quantity(desc):
    return {
        "description": desc,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY,
        "x-kubernetes-int-or-string": True,
    }


# ---------------------------------------------------------------------------
# Embedded Kubernetes core types
# ---------------------------------------------------------------------------


def resources(desc):
    return O(desc, {
        "claims": A(
            "Dynamic resource claims (DRA) this container may use; each entry names a claim from the pod's resourceClaims.",
            O("One resource claim used by the container.", {
                "name": S("Name of an entry in the pod's spec.resourceClaims."),
                "request": S("Name of one request inside that claim; empty means the whole claim."),
            }, required=["name"]),
            **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
        "limits": M(
            "Maximum compute resources, by resource name (cpu, memory, ephemeral-storage, hugepages-*). "
            "Values are Kubernetes quantities such as 500m, 2, 256Mi or 1Gi.",
            quantity("A Kubernetes quantity.")),
        "requests": M(
            "Minimum compute resources the scheduler reserves, by resource name. "
            "Values are Kubernetes quantities; a request must not exceed its limit.",
            quantity("A Kubernetes quantity.")),
    })


def affinity(desc):
    return {
        "description": desc + " Standard Kubernetes Affinity (nodeAffinity, podAffinity, podAntiAffinity); "
        "see `kubectl explain pod.spec.affinity`.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }


def tolerations(desc):
    return A(desc, O(
        "A standard Kubernetes toleration; see `kubectl explain pod.spec.tolerations`.", {
            "effect": S("Taint effect to match: NoSchedule, PreferNoSchedule or NoExecute; empty matches all effects."),
            "key": S("Taint key to match; empty with operator Exists matches every taint."),
            "operator": S("Exists or Equal (the default when empty)."),
            "tolerationSeconds": I64("For NoExecute taints: how long the pod stays bound after the taint appears; unset means forever."),
            "value": S("Taint value to match when operator is Equal."),
        }), **{"x-kubernetes-list-type": "atomic"})


def image_pull_secrets(desc):
    return A(desc, O("A reference to a Secret of type kubernetes.io/dockerconfigjson in the same namespace.", {
        "name": S("Name of the Secret."),
    }, **{"x-kubernetes-map-type": "atomic"}), **{"x-kubernetes-list-type": "atomic"})


def string_map(desc, max_props, key_lt, val_lt, what, cel):
    s = M(desc, S("The value."), maxProperties=max_props)
    return with_rules(s, [rule(
        f"self.all(k, size(k) < {key_lt} && size(self[k]) < {val_lt})",
        f"{what}: keys must be shorter than {key_lt} characters and values shorter than {val_lt}; shorten the offending entry",
    )], cel)


# ---------------------------------------------------------------------------
# Multigres component shapes
# ---------------------------------------------------------------------------


def stateless_props(cel):
    return {
        "replicas": I32("Number of pods. Unset: inherited from the template chain, then the operator default (1).",
                        minimum=0, maximum=128),
        "resources": resources("CPU and memory requests and limits of the component's container. "
                               "Unset: inherited, then the operator default."),
        "affinity": affinity("Scheduling affinity of the pods."),
        "podAnnotations": string_map("Extra annotations put on the pods (at most 20).", 20, 64, 256,
                                     "podAnnotations", cel),
        "podLabels": string_map("Extra labels put on the pods (at most 20). They never replace the operator's own "
                                "app.kubernetes.io/* and multigres.com/* labels.", 20, 64, 64, "podLabels", cel),
    }


def stateless(desc, cel):
    return O(desc, stateless_props(cel))


def placement(desc):
    return O(desc, {
        "tolerations": tolerations("Tolerations added to the pods so they can run on tainted nodes."),
    })


def multigateway_spec(desc, cel):
    props = stateless_props(cel)
    props["buffer"] = O(
        "Request buffering during planned failovers: while a shard has no serving primary the gateway holds "
        "requests and replays them once the new primary serves. Unset fields pass no flag, so the multigateway "
        "binary's own defaults apply.", {
            "enabled": B("Turns buffering on or off (--buffer-enabled)."),
            "window": S("Longest time one request may stay buffered (--buffer-window), as a Go duration such as 10s.",
                        maxLength=64, pattern=DURATION),
            "maxFailoverDuration": S("Longest time one failover may keep requests buffered "
                                     "(--buffer-max-failover-duration), e.g. 20s; must be at least window.",
                                     maxLength=64, pattern=DURATION),
            "minTimeBetweenFailovers": S("Minimum time between two buffering episodes of the same shard "
                                         "(--buffer-min-time-between-failovers), e.g. 1m.",
                                         maxLength=64, pattern=DURATION),
            "size": I32("Maximum number of requests buffered at once (--buffer-size).", minimum=1),
            "drainConcurrency": I32("Number of buffered requests replayed in parallel after the failover "
                                    "(--buffer-drain-concurrency).", minimum=1),
        })
    return O(desc, props)


def multiorch_spec(desc, cel):
    props = stateless_props(cel)
    props["placement"] = placement("Scheduling settings (tolerations) for the multiorch pods.")
    props["cells"] = A("Cells that run a multiorch for this shard. Empty: every cell that hosts one of the shard's pools.",
                       cell_name("A cell name from spec.cells."), maxItems=50,
                       **{"x-kubernetes-list-type": "set"})
    return O(desc, props)


def storage(desc, cel=False):
    s = O(desc, {
        "size": S("Size of each volume as a Kubernetes quantity, e.g. 10Gi. Unset: inherited, then the operator default. "
                  "Volumes can grow but never shrink.", maxLength=63, pattern=QUANTITY),
        "class": S("StorageClass of the volumes. Unset: the cluster's default StorageClass.", minLength=1, maxLength=63),
        "accessModes": A("Access modes of the volumes, e.g. ReadWriteOnce or ReadWriteMany. Unset: ReadWriteOnce.",
                         S("A PersistentVolume access mode."), maxItems=4, **{"x-kubernetes-list-type": "atomic"}),
    })
    # a transition rule: evaluated on updates only, against the old value
    return with_rules(s, [rule(
        "!has(self.size) || !has(oldSelf.size) || quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
        "storage.size cannot shrink: volumes can grow but never shrink; set it back to at least the previous size")], cel)


def pvc_policy(desc):
    return O(desc + " A field left unset is inherited from the next level up (pool, shard, table group, cluster, "
             "template); the final fallback is Retain for both.", {
                 "whenDeleted": S("What happens to the PVCs when their owner is deleted: Retain keeps them, Delete removes them.",
                                  enum=["Retain", "Delete"]),
                 "whenScaled": S("What happens to the PVCs of pods removed by a scale-down: Retain keeps them, Delete removes them.",
                                 enum=["Retain", "Delete"]),
             })


def etcd_spec(desc, cel):
    replicas = I32("Number of etcd members. Must be odd (1, 3, 5...): an even count adds no fault tolerance. "
                   "Fixed once the etcd cluster exists. Unset: inherited, then 3.", minimum=1, maximum=9)
    replicas = with_rules(replicas, [
        rule("self % 2 == 1",
             "etcd replicas must be odd (1, 3, 5...); an even number adds no fault tolerance over the next lower odd number"),
        rule("self == oldSelf",
             "etcd replicas are fixed once the etcd cluster exists (its membership is set when it starts); "
             "restore the previous value"),
    ], cel)
    maint = O(
        "Storage maintenance of operator-managed etcd: MVCC history compaction, backend quota and optional "
        "defragmentation. Unset fields use etcd's defaults as applied by the operator.", {
            "autoCompactionMode": S("periodic (keep history for a duration) or revision (keep a number of revisions).",
                                    enum=["periodic", "revision"]),
            "autoCompactionRetention": S("History to keep: a duration using h, m and s in periodic mode (e.g. 1h), "
                                         "a positive revision count in revision mode (e.g. 10000).",
                                         minLength=1, maxLength=32),
            "quotaBackendBytes": I64("Backend storage quota in bytes (1 MiB to 8 GiB). Never lower it below the current "
                                     "backend size.", minimum=1048576, maximum=8589934592),
            "defragmentationEnabled": B("Opt in to health-gated defragmentation of at most one member at a time."),
        })
    maint = with_rules(maint, [rule(
        "!has(self.autoCompactionRetention) || ((has(self.autoCompactionMode) && self.autoCompactionMode == 'revision') "
        "? self.autoCompactionRetention.matches('^[1-9][0-9]{0,9}$') "
        ": self.autoCompactionRetention.matches('^([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?$') && "
        "self.autoCompactionRetention.matches('[1-9]'))",
        "autoCompactionRetention must be a positive revision count (e.g. 10000) in revision mode, "
        "or a positive duration using h, m and s (e.g. 1h) in periodic mode",
    )], cel)
    return O(desc, {
        "image": image_ref("etcd container image. Unset: the operator's pinned etcd image."),
        "replicas": replicas,
        "storage": storage("Data volume of each etcd member. Unset size: 1Gi.", cel),
        "resources": resources("CPU and memory of the etcd container. Unset: 100m/256Mi requested, 512Mi memory limit."),
        "maintenance": maint,
        "rootPath": S("Key prefix of this topology inside etcd. Unset: /multigres/global for the global topology.",
                      minLength=1, maxLength=512),
        "pvcDeletionPolicy": pvc_policy("PVC lifecycle of the etcd volumes."),
    })


def external_topo(desc, cel):
    endpoints = A("Client URLs of the external etcd members (http:// or https://).",
                  S("One etcd client URL, e.g. https://etcd-0.infra:2379.", minLength=1, maxLength=2048),
                  minItems=1, maxItems=20, **{"x-kubernetes-list-type": "set"})
    endpoints = with_rules(endpoints, [rule(
        "self.all(x, x.matches('^https?://'))",
        "every endpoint must be a URL starting with http:// or https://, e.g. https://etcd-0.infra:2379")], cel)
    return O(desc, {
        "endpoints": endpoints,
        "implementation": S("Topology client implementation. Unset: etcd.", maxLength=63),
        "caSecret": S("Secret (same namespace) holding the CA certificate (ca.crt) that verifies the etcd servers. "
                      "A cell's: the global topology's Secret or unset (Multigres components take one etcd TLS "
                      "set-up per process).", maxLength=253),
        "clientCertSecret": S("Secret (same namespace) of type kubernetes.io/tls with the client certificate and key "
                              "presented to etcd. A cell's: the global topology's Secret or unset.", maxLength=253),
        "rootPath": S("Key prefix of this cluster's topology inside the external etcd.", minLength=1, maxLength=512),
    }, required=["endpoints"])


def topo_placement(desc):
    s = O(desc, {
        "tolerations": tolerations("Tolerations added to the etcd pods."),
    })
    s["x-kubernetes-preserve-unknown-fields"] = True
    return s


def global_topo(desc, cel):
    s = O(desc, {
        "etcd": etcd_spec("An operator-managed etcd cluster, configured inline.", cel),
        "external": external_topo("An existing etcd cluster the operator connects to; no TopoServer is created.", cel),
        "templateRef": template_ref("Name of a CoreTemplate whose globalTopoServer section configures a managed etcd."),
        "pvcDeletionPolicy": pvc_policy("PVC lifecycle of the global etcd volumes."),
        "placement": topo_placement("Scheduling settings (tolerations) for the global etcd pods."),
    })
    return with_rules(s, [rule(
        "[has(self.etcd), has(self.external), has(self.templateRef)].filter(x, x).size() == 1",
        "globalTopoServer must set exactly one of etcd, external or templateRef; remove the others "
        "(omit globalTopoServer entirely to get the default managed etcd)")], cel)


def local_topo(desc, cel):
    s = O(desc, {
        "etcd": etcd_spec("An operator-managed etcd cluster dedicated to this cell.", cel),
        "external": external_topo("An existing etcd cluster used for this cell's topology.", cel),
    })
    return with_rules(s, [
        rule("has(self.etcd) || has(self.external)",
             "localTopoServer must set either etcd or external; omit localTopoServer to use the global topology server"),
        rule("!(has(self.etcd) && has(self.external))",
             "localTopoServer cannot set both etcd and external; keep only one"),
    ], cel)


def topo_ref(desc):
    return O(desc, {
        "address": S("host:port of the global topology server.", minLength=1, maxLength=512),
        "rootPath": S("Key prefix of the global topology.", minLength=1, maxLength=512),
        "implementation": S("Topology client implementation, e.g. etcd.", minLength=1, maxLength=63),
        "caSecret": S("Secret with the CA bundle that verifies the topology server; empty without TLS.", maxLength=253),
        "clientCertSecret": S("Secret with the client certificate presented to the topology server; empty without TLS.",
                              maxLength=253),
    })


def backup(desc, cel):
    fs = O("Backups on one PersistentVolumeClaim per shard (backup-data-<cluster>-<db>-<tablegroup>-<shard>), "
           "mounted by every pool pod of the shard in every cell.", {
               "path": S("Directory of the backup repository inside the pods. Unset: /backups.", maxLength=512),
               "storage": storage("The backup volume. Unset size: 10Gi; unset accessModes: ReadWriteOnce. Every pod "
                                  "of the shard mounts it, so use a ReadWriteMany StorageClass once they run on more "
                                  "than one node (admission warns when a ReadWriteOnce volume spans cells). Created "
                                  "once: later changes do not alter an existing volume.", cel),
           })
    s3 = O("Backups in an S3-compatible bucket, shared by all cells. Recommended for production and multi-cell clusters.", {
        "bucket": S("Bucket name.", minLength=1, maxLength=63),
        "region": S("Bucket region, e.g. us-east-1.", minLength=1, maxLength=63),
        "endpoint": S("Endpoint URL for non-AWS S3 implementations (e.g. http://minio:9000). Unset: AWS.", maxLength=2048),
        "keyPrefix": S("Key prefix under which this cluster's repositories are stored.", maxLength=1024),
        "useEnvCredentials": B("Take credentials from the AWS_* environment of the pods."),
        "credentialsSecret": S("Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.", maxLength=253),
        "serviceAccountName": S("ServiceAccount (created by you, annotated for IRSA) the pods run as to reach the bucket.",
                                maxLength=253),
    }, required=["bucket", "region"])
    s3 = with_rules(s3, [
        rule("!(has(self.serviceAccountName) && size(self.serviceAccountName) > 0 && "
             "has(self.credentialsSecret) && size(self.credentialsSecret) > 0)",
             "s3: serviceAccountName and credentialsSecret are mutually exclusive; keep one"),
        rule("!(has(self.serviceAccountName) && size(self.serviceAccountName) > 0 && "
             "has(self.useEnvCredentials) && self.useEnvCredentials)",
             "s3: serviceAccountName and useEnvCredentials are mutually exclusive (IRSA supplies the credentials); keep one"),
    ], cel)
    s = O(desc + " Set at cluster level and overridable per database, table group and shard.", {
        "type": S("Backup backend: filesystem (a PVC) or s3.", enum=["filesystem", "s3"]),
        "filesystem": fs,
        "s3": s3,
        "pgbackrestTLS": O("TLS for pgBackRest traffic between the replicas of a shard.", {
            "secretName": S("Secret with ca.crt, tls.crt and tls.key (cert-manager's layout). Unset: the operator "
                            "generates and rotates a CA and certificate per shard (Secrets <shard>-pgbackrest-ca and "
                            "<shard>-pgbackrest-tls).", maxLength=253),
        }),
        "schedule": S("Full backups on a cron schedule, five fields (minute hour day-of-month month day-of-week; "
                      "numbers, *, ranges, steps and lists), evaluated by the operator in UTC; e.g. \"0 3 * * *\". "
                      "The operator asks multiadmin for one shard's backup at a time. Unset: no scheduled backups.",
                      minLength=9, maxLength=100),
        "scheduleJitterSeconds": I32("Each shard fires up to this many seconds after the scheduled minute (a fixed "
                                     "offset per shard), so shards do not all start at once. Unset: 0.",
                                     minimum=0, maximum=3600),
        "retention": I32("Full backups to keep: after each scheduled backup the operator asks multiadmin to expire "
                         "older ones (pgBackRest repo1-retention-full). Unset: nothing is expired by the operator.",
                         minimum=1, maximum=1000),
        "encryption": O("Client-side encryption of the backup repository. Cannot be added, removed or changed later.", {
            "secretName": S("Secret with key keys.json mapping repository generation to passphrase, e.g. {\"1\": \"...\"}.",
                            minLength=1, maxLength=253),
        }, required=["secretName"]),
    }, required=["type"])
    return with_rules(s, [
        rule("self.type != 's3' || has(self.s3)", "backup.type is s3: set backup.s3 (bucket and region)"),
        rule("self.type != 'filesystem' || has(self.filesystem)",
             "backup.type is filesystem: set backup.filesystem (it may be empty, {}, to use the defaults)"),
        rule("has(self.encryption) == has(oldSelf.encryption) && (!has(self.encryption) || self.encryption == oldSelf.encryption)",
             "backup.encryption cannot be added, removed or changed after creation; restore the previous value"),
    ], cel)


def observability():
    return O("OpenTelemetry settings of the data-plane pods (multigateway, multiorch, multipooler, pgctld). "
             "Unset fields take the operator's own OTEL_* environment.", {
                 "otlpEndpoint": S("OTLP collector URL (OTEL_EXPORTER_OTLP_ENDPOINT), e.g. http://otel-collector:4318; "
                                   "the value disabled turns telemetry off.", maxLength=2048),
                 "otlpMetricsEndpoint": S("OTLP endpoint for metrics only (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT), "
                                          "e.g. http://vmagent:4318/v1/metrics.", maxLength=2048),
                 "otlpProtocol": S("OTLP transport (OTEL_EXPORTER_OTLP_PROTOCOL).", enum=["http/protobuf", "grpc"]),
                 "tracesExporter": S("Trace exporter (OTEL_TRACES_EXPORTER).", enum=["otlp", "none", "console"]),
                 "metricsExporter": S("Metrics exporter (OTEL_METRICS_EXPORTER).", enum=["otlp", "none", "console"]),
                 "logsExporter": S("Logs exporter (OTEL_LOGS_EXPORTER).", enum=["otlp", "none", "console"]),
                 "metricExportInterval": S("Metric export interval in milliseconds (OTEL_METRIC_EXPORT_INTERVAL).",
                                           maxLength=32),
                 "metricsTemporality": S("Temporality preference (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE).",
                                         enum=["cumulative", "delta"]),
                 "histogramAggregation": S("Default histogram aggregation "
                                           "(OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION).",
                                           enum=["base2_exponential_bucket_histogram", "explicit_bucket_histogram"]),
                 "tracesSampler": S("Trace sampler (OTEL_TRACES_SAMPLER), e.g. parentbased_traceidratio; "
                                    "multigres_custom reads samplingConfigRef.", maxLength=128),
                 "samplingConfigRef": O("ConfigMap with the sampling file used by the multigres_custom sampler.", {
                     "name": S("ConfigMap name, same namespace.", minLength=1, maxLength=253),
                     "key": S("Data key of the sampling file. Unset: sampling-config.yaml.", maxLength=253),
                 }, required=["name"]),
             })


def log_levels():
    lv = lambda c: S(f"--log-level of {c}. Unset: info.", enum=["debug", "info", "warn", "error"])
    return O("Log level of each data-plane component.", {
        "pgctld": lv("pgctld (the postgres container)"),
        "multipooler": lv("multipooler"),
        "multiorch": lv("multiorch"),
        "multiadmin": lv("multiadmin"),
        "multigateway": lv("multigateway"),
    })


def pool_spec(desc, cel, pool_cells_rule=True):
    cells = A("Cells this pool runs in; replicasPerCell pods are placed in each. Cells can be added, never removed. "
              "Unset: inherited from the template, else chosen by the operator from spec.cells.",
              cell_name("A cell name from spec.cells."), minItems=1, maxItems=10,
              **{"x-kubernetes-list-type": "set"})
    if pool_cells_rule:
        cells = with_rules(cells, [rule("oldSelf.all(c, c in self)",
                                        "cells cannot be removed from a pool (append-only); add the removed cell back")], cel)
    return O(desc, {
        "type": S("Pool role: readWrite (the default), whose replicas serve reads too. readOnly is accepted from "
                  "older manifests and refused with a message: Multigres has no read-only pooler.",
                  enum=["readWrite", "readOnly"]),
        "cells": cells,
        "replicasPerCell": I32("Pods per cell (at least 1; 3 recommended for the AT_LEAST_2 durability policy). "
                               "Unset: inherited, then 3.", minimum=1, maximum=32),
        "storage": storage("Data volume of each pod. Unset size: inherited, then 1Gi.", cel),
        "postgres": O("The postgres container (pgctld).", {
            "resources": resources("CPU and memory of postgres. Unset: 100m/256Mi requested, 512Mi memory limit."),
            "runAsUser": I64("User id postgres runs as (the owner of the data directory). Unset: 999, the Multigres "
                             "images' postgres user.", minimum=1),
            "runAsGroup": I64("Group id postgres runs as. Unset: 999.", minimum=1),
        }),
        "multipooler": O("The multipooler sidecar.", {
            "resources": resources("CPU and memory of multipooler. Unset: 100m/128Mi requested, 256Mi memory limit."),
            "runAsUser": I64("User id multipooler runs as; it shares the data directory and socket with postgres, so "
                             "it must equal postgres's. Unset: postgres's.", minimum=1),
            "runAsGroup": I64("Group id multipooler runs as; must equal postgres's. Unset: postgres's.", minimum=1),
        }),
        "affinity": affinity("Scheduling affinity of the pool pods."),
        "tolerations": tolerations("Tolerations of the pool pods."),
        "fsGroup": I64("Pod fsGroup, for shared volume and socket access between the containers.", minimum=1),
        "pvcDeletionPolicy": pvc_policy("PVC lifecycle of this pool's volumes."),
    })


def pools_map(desc, cel, key_rule, key_msg, children=False):
    s = M(desc, pool_spec("One pool: a set of postgres + multipooler pods per cell.", cel, not children),
          maxProperties=8)
    return with_rules(s, [
        rule(key_rule, key_msg),
        rule("oldSelf.all(k, k in self)",
             "pools cannot be removed or renamed (append-only); restore the missing pool"),
    ], cel)


CLUSTER_POOL_KEY = ("self.all(key, size(key) <= 25)",
                    "pool names must be at most 25 characters; use a shorter key")
TEMPLATE_POOL_KEY = ("self.all(key, size(key) < 63)",
                     "pool names must be shorter than 63 characters; use a shorter key")


def pg_config_ref(desc):
    return O(desc, {
        "name": S("ConfigMap name, same namespace.", minLength=1, maxLength=253),
        "key": S("Data key holding the postgresql.conf lines.", minLength=1, maxLength=253),
    }, required=["name", "key"])


def shard_common_props(cel):
    return {
        "multiorch": multiorch_spec("The multiorch (failover orchestrator) of the shard.", cel),
        "initdbArgs": S("Extra initdb arguments, e.g. --locale-provider=icu --icu-locale=en_US.UTF-8. "
                        "Used only when a pod initialises an empty data directory.", maxLength=512),
        "postgresConfigRef": pg_config_ref("Deprecated in favour of postgresConfig: a ConfigMap whose postgresql.conf "
                                           "lines are merged into the generated configuration."),
        "postgresConfig": M("PostgreSQL parameters (GUC name to value) merged into the generated postgresql.conf; "
                            "they win over postgresConfigRef and the operator's defaults.",
                            S("Parameter value as postgresql.conf text."), maxProperties=200),
    }


def durability_policy(desc):
    return S(desc + " AT_LEAST_2: any two nodes acknowledge each write; MULTI_CELL_AT_LEAST_2: two nodes in "
             "different cells. Unset: inherited, then AT_LEAST_2.",
             enum=["AT_LEAST_2", "MULTI_CELL_AT_LEAST_2"])


def secret_key_ref(desc, required):
    return O(desc, {
        "name": S("Secret name, same namespace.", minLength=1, maxLength=253, pattern=DNS_SUBDOMAIN),
        "key": S("Data key inside the Secret.", minLength=1, maxLength=253, pattern=r"^[-._a-zA-Z0-9]+$"),
    }, required=required)


def internal_tls(desc):
    s = O(desc, {"enabled": B("Turns mutual TLS between Multigres components on.")})
    s["x-kubernetes-preserve-unknown-fields"] = True
    return s


def shard_images():
    return O("Images used by the shard's pods.", {
        "imagePullPolicy": S("Pull policy of every container.", enum=["Always", "Never", "IfNotPresent"]),
        "imagePullSecrets": image_pull_secrets("Registry credentials for the pods."),
        "multiorch": image_ref("multiorch image."),
        "multipooler": image_ref("multipooler image."),
        "postgres": image_ref("postgres (pgctld) image."),
    })


# ---------------------------------------------------------------------------
# Status shapes
# ---------------------------------------------------------------------------


def conditions():
    return A(
        "Standard conditions. The operator writes Ready (true when the resource has converged and is serving), "
        "Reconciling (true while it converges) and Stalled (true on an error that needs a human), plus "
        "Available and Progressing for parity with the reference operator.",
        O("A metav1.Condition.", {
            "type": S("Condition type, e.g. Ready.", maxLength=316,
                      pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"),
            "status": S("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "observedGeneration": I64("metadata.generation the condition was computed from.", minimum=0),
            "lastTransitionTime": S("When status last changed.", format="date-time"),
            "reason": S("CamelCase machine-readable reason.", minLength=1, maxLength=1024,
                        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
            "message": S("Human-readable detail; for errors it names the field and the fix.", maxLength=32768),
        }, required=["type", "status", "lastTransitionTime", "reason", "message"]),
        **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})


def base_status(what):
    return {
        "observedGeneration": I64(f"metadata.generation of the {what} that this status describes.", minimum=0),
        "conditions": conditions(),
        "phase": S("Summary state: Initializing, Progressing, Healthy, Degraded or Unknown."),
        "message": S("Detail about the phase, e.g. the error that holds it."),
    }


def template_status(kind):
    props = base_status(kind)
    del props["phase"]
    del props["message"]
    props["conditions"]["description"] = (
        "Standard conditions. Ready is true when the template is valid; the operator does not reconcile "
        "templates beyond that.")
    props["consumers"] = A(f"Names of the MultigresClusters in this namespace that currently resolve this {kind}. "
                           "A template with consumers cannot be deleted.",
                           S("A MultigresCluster name."), maxItems=1000, **{"x-kubernetes-list-type": "set"})
    return O(f"Observed state of the {kind}, written by the operator.", props)


# ---------------------------------------------------------------------------
# Kinds
# ---------------------------------------------------------------------------


def cluster_schema():
    cel = True
    images = O("Container images of every component. Unset images use the operator's pinned defaults.", {
        "imagePullPolicy": S("Pull policy of every container. Unset: IfNotPresent.", enum=["Always", "Never", "IfNotPresent"]),
        "imagePullSecrets": image_pull_secrets("Registry credentials used by every pod of the cluster."),
        "multigateway": image_ref("multigateway image."),
        "multiorch": image_ref("multiorch image."),
        "multipooler": image_ref("multipooler image."),
        "multiadmin": image_ref("multiadmin image."),
        "multiadminWeb": image_ref("multiadmin-web image."),
        "postgres": image_ref("postgres (pgctld) image."),
    })
    admin = O("The cluster-wide multiadmin Deployment. Omit it to use the template chain and then the operator default; "
              "when present it needs spec or templateRef.", {
                  "spec": stateless("Inline multiadmin settings.", cel),
                  "templateRef": template_ref("Name of a CoreTemplate whose multiadmin section is used."),
                  "placement": placement("Scheduling settings for the multiadmin pods, applied with spec or templateRef."),
              })
    admin = with_rules(admin, [
        rule("has(self.spec) || has(self.templateRef)",
             "multiadmin needs spec or templateRef; set one, or omit multiadmin to use the defaults"),
        rule("!(has(self.spec) && has(self.templateRef))",
             "multiadmin cannot set both spec and templateRef; keep one"),
    ], cel)
    admin_web = O("The multiadmin-web Deployment (web UI). Same rules as multiadmin.", {
        "spec": stateless("Inline multiadmin-web settings.", cel),
        "templateRef": template_ref("Name of a CoreTemplate whose multiadminWeb section is used."),
    })
    admin_web = with_rules(admin_web, [
        rule("has(self.spec) || has(self.templateRef)",
             "multiadminWeb needs spec or templateRef; set one, or omit multiadminWeb to use the defaults"),
        rule("!(has(self.spec) && has(self.templateRef))",
             "multiadminWeb cannot set both spec and templateRef; keep one"),
    ], cel)

    cell = O("One cell: a failure domain (zone or region) with its own multigateway.", {
        "name": cell_name("Cell name, unique in the cluster; part of child resource names. Cannot be changed."),
        "zone": S("Availability-zone name, e.g. us-east-1a. Set exactly one of zone, zoneId and region. Immutable.",
                  minLength=1, maxLength=63),
        "zoneId": S("Availability-zone ID, e.g. use1-az1 (stable across AWS accounts). Set exactly one of zone, zoneId "
                    "and region. Immutable.", minLength=1, maxLength=63),
        "region": S("Region name, e.g. us-east-1, for region-wide cells. Set exactly one of zone, zoneId and region. "
                    "Immutable.", minLength=1, maxLength=63),
        "metadata": S("Accepted from the reference operator's manifests and refused when set: Multigres's Cell "
                      "topology record (name, server_addresses, root) has no field to hold it. Keep notes in an "
                      "annotation.", maxLength=4096),
        "cellTemplate": template_ref("Name of a CellTemplate to use. Unset: spec.templateDefaults.cellTemplate, then the "
                                     "CellTemplate named default, then the operator defaults. Not with spec."),
        "overrides": O("Fields applied on top of the template (deep merge). Not with spec.", {
            "multigateway": multigateway_spec("multigateway settings that override the template's.", cel),
            "multigatewayPlacement": placement("Scheduling settings for the multigateway pods."),
        }),
        "spec": O("Inline cell configuration used instead of a template. Not with cellTemplate or overrides.", {
            "multigateway": multigateway_spec("The cell's multigateway Deployment.", cel),
            "multigatewayPlacement": placement("Scheduling settings for the multigateway pods."),
            "localTopoServer": local_topo("A topology server for this cell only. Unset: the cell uses the global one.", cel),
        }),
    }, required=["name"], rules=[
        rule("!(has(self.spec) && has(self.cellTemplate))",
             "a cell cannot set both spec and cellTemplate; use the template (with overrides) or the inline spec"),
        rule("!(has(self.spec) && has(self.overrides))",
             "a cell cannot set both spec and overrides; overrides only patch a template, put the fields in spec instead"),
        rule("[has(self.zone), has(self.zoneId), has(self.region)].filter(x, x).size() == 1",
             "a cell must set exactly one of zone, zoneId or region"),
        rule("(has(self.zone) ? self.zone : '') == (has(oldSelf.zone) ? oldSelf.zone : '') && "
             "(has(self.zoneId) ? self.zoneId : '') == (has(oldSelf.zoneId) ? oldSelf.zoneId : '') && "
             "(has(self.region) ? self.region : '') == (has(oldSelf.region) ? oldSelf.region : '')",
             "a cell's zone, zoneId and region are immutable; restore the previous value (a cell cannot move)"),
    ])
    cells = A("Cells (failure domains) of the cluster, at most 50. Cells can be added, never removed or renamed.",
              cell, maxItems=50, rules=[
                  rule("oldSelf.all(c, c.name in self.map(x, x.name))",
                       "cells cannot be removed or renamed (append-only); restore the missing cell"),
              ], **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})

    shard_name = S("Shard name. In v1alpha1 it must be 0-inf (one shard covering the whole key range).",
                   minLength=1, maxLength=25, pattern=DNS_LABEL)
    shard_name["x-kubernetes-validations"] = [
        rule("self == '0-inf'", "shard name must be 0-inf in v1alpha1 (multigres supports one unsharded shard for now)")]
    shard_inline_props = shard_common_props(cel)
    shard_inline_props["pools"] = pools_map("Pools of the shard by name (at most 8). Pools can be added, never removed.",
                                            cel, *CLUSTER_POOL_KEY)
    shard_inline_props["pvcDeletionPolicy"] = pvc_policy("PVC lifecycle of this shard's pools.")
    shard_over_props = shard_common_props(cel)
    shard_over_props["pools"] = pools_map(
        "Per-pool fields merged into the template's pools; a name not in the template adds a pool (at most 8 in all).",
        cel, *CLUSTER_POOL_KEY)
    shard = O("One shard of the table group.", {
        "name": shard_name,
        "shardTemplate": template_ref("Name of a ShardTemplate to use. Unset: spec.templateDefaults.shardTemplate, then "
                                      "the ShardTemplate named default, then the operator defaults. Not with spec."),
        "overrides": O("Fields applied on top of the template (deep merge). Not with spec.", shard_over_props),
        "spec": O("Inline shard configuration used instead of a template. Not with shardTemplate or overrides.",
                  shard_inline_props, rules=[
                      rule("!has(oldSelf.pools) || has(self.pools)",
                           "spec.pools cannot be removed once set (pools are append-only); restore it"),
                  ]),
        "backup": backup("Backup settings of this shard.", cel),
    }, required=["name"], rules=[
        rule("!(has(self.spec) && has(self.shardTemplate))",
             "a shard cannot set both spec and shardTemplate; use the template (with overrides) or the inline spec"),
        rule("!(has(self.spec) && has(self.overrides))",
             "a shard cannot set both spec and overrides; overrides only patch a template, put the fields in spec instead"),
    ])
    tablegroup = O("One table group: tables sharded together.", {
        "name": S("Table group name. The default table group must be named default.",
                  minLength=1, maxLength=25, pattern=DNS_LABEL),
        "default": B("Marks the default (unsharded) table group. Exactly one per database, and it must be named default."),
        "shards": A("Shards of the table group (in v1alpha1 one, named 0-inf). Unset: one shard 0-inf with the "
                    "resolved template.", shard, maxItems=32,
                    **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
        "backup": backup("Backup settings of this table group's shards.", cel),
        "pvcDeletionPolicy": pvc_policy("PVC lifecycle of this table group's shards."),
    }, required=["name"], rules=[
        rule("!has(self.default) || !self.default || self.name == 'default'",
             "the default tablegroup must be named default; rename it or set default: false"),
    ])
    database = O("One logical database.", {
        "name": S("Database name. In v1alpha1 the only database is postgres.", minLength=1, maxLength=30, pattern=DNS_LABEL),
        "default": B("Marks the system default database; must be true in v1alpha1."),
        "tablegroups": A("Table groups of the database, at most 20; exactly one is the default one, named default.",
                         tablegroup, maxItems=20, rules=[
                             rule("self.filter(x, has(x.default) && x.default).size() == 1",
                                  "every database needs exactly one tablegroup with default: true (named default)"),
                         ], **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
        "backup": backup("Backup settings of this database's shards.", cel),
        "durabilityPolicy": durability_policy("Write durability of this database; overrides the cluster's."),
    }, required=["name"])
    databases = A("Logical databases. In v1alpha1 exactly one is supported: postgres, with default: true. "
                  "Unset: the operator uses postgres with table group default and shard 0-inf.",
                  database, maxItems=1, rules=[
                      rule("self.all(db, db.name == 'postgres' && has(db.default) && db.default)",
                           "in v1alpha1 the only database is the system database: name it postgres and set default: true"),
                  ], **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})

    def exposure(what, svc):
        s = O(f"External exposure of the global {what} Service. Unset or enabled: false keeps it ClusterIP only.", {
            "enabled": B(f"Expose the {svc} Service on the externalIPs below."),
            "externalIPs": A("Externally routable addresses set as the Service's externalIPs (at most 10).",
                             S("An IPv4 or IPv6 address.", minLength=3, maxLength=45,
                               pattern=r"^(([0-9]{1,3}\.){3}[0-9]{1,3})$|^(([0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4})$"),
                             maxItems=10, **{"x-kubernetes-list-type": "atomic"}),
            "annotations": M("Annotations put on the Service (at most 20), e.g. for a cloud load balancer. "
                             "The multigres.com/ prefix is reserved.", S("The value."), maxProperties=20),
        }, required=["enabled"])
        return with_rules(s, [rule(
            "!has(self.annotations) || self.annotations.all(k, !k.startsWith('multigres.com/'))",
            "annotations must not use the multigres.com/ prefix (reserved for the operator); rename the key")], cel)

    spec = O("Desired state of the cluster. Everything is optional: unset fields are resolved by the operator from "
             "templates and built-in defaults, and never written back here.", {
                 "images": images,
                 "imageUpdatePolicy": O("When the cluster adopts a new operator-default image set. Explicit spec.images "
                                        "values are not affected.", {
                                            "strategy": S("immediate: adopt new defaults on the next reconcile; lazy: keep "
                                                          "the current set until acknowledgedRevision names the new one. "
                                                          "Unset: the operator's --image-update-strategy.",
                                                          enum=["immediate", "lazy"]),
                                            "acknowledgedRevision": S("Revision (from status.images.availableRevision) "
                                                                      "that the cluster may adopt under the lazy strategy.",
                                                                      maxLength=64, pattern=r"^[0-9a-f]*$"),
                                        }),
                 "logLevels": log_levels(),
                 "templateDefaults": O("Templates used by every component that names none itself "
                                       "(level 2 of the defaults chain).", {
                                           "coreTemplate": template_ref("CoreTemplate for the global topology server and multiadmin."),
                                           "cellTemplate": template_ref("CellTemplate for every cell."),
                                           "shardTemplate": template_ref("ShardTemplate for every shard."),
                                       }),
                 "globalTopoServer": global_topo("The cluster-wide topology server (etcd). Unset: the template chain, "
                                                 "then a managed 3-member etcd.", cel),
                 "multiadmin": admin,
                 "multiadminWeb": admin_web,
                 "cells": cells,
                 "databases": databases,
                 "pvcDeletionPolicy": pvc_policy("Cluster-wide PVC lifecycle."),
                 "observability": observability(),
                 "backup": backup("Cluster-wide pgBackRest backup settings. Unset at every level: filesystem backups in "
                                  "/backups on a 10Gi ReadWriteOnce PVC per shard.", cel),
                 "externalGateway": exposure("multigateway", "multigateway"),
                 "externalAdminWeb": exposure("multiadmin-web", "multiadmin-web"),
                 "topologyPruning": O("Removal of stale topology entries.", {
                     "enabled": B("Delete the Cell and Database records (in Multigres's global topology) of cells and "
                                  "databases removed from the spec, once their workloads are gone. Unset: true."),
                 }),
                 "durabilityPolicy": durability_policy("Default write durability of every database."),
                 "postgresSuperuser": S("Name of the postgres superuser role created by initdb and used by multipooler and "
                                        "multiadmin. Unset: postgres.", minLength=1, maxLength=63),
                 "postgresPasswordSecretRef": secret_key_ref(
                     "Secret (not owned or changed by the operator) holding the superuser password. Unset: the operator "
                     "generates a per-shard password Secret.", ["name", "key"]),
                 "postgresInitSecretsRef": secret_key_ref("Secret with optional day-0 settings passed to pgctld when a "
                                                          "data directory is initialised.", ["name"]),
                 "internalTLS": internal_tls("Mutual TLS between Multigres components. Unset or enabled: false: off."),
                 "certCommonName": S("DNS name for the public PostgreSQL TLS certificate served by multigateway "
                                     "(issued through cert-manager). Unset: no TLS on client connections.", maxLength=253),
                 "issuerName": S("cert-manager ClusterIssuer for the certificates of this cluster.", maxLength=253),
             }, rules=[
                 rule("!has(oldSelf.cells) || has(self.cells)",
                      "spec.cells cannot be removed once set (cells are append-only); restore the list"),
             ])

    status = O("Observed state of the cluster, written by the operator.", dict(base_status("MultigresCluster"), **{
        "readyCells": I32("Cells whose Cell resource is Ready.", minimum=0),
        "totalCells": I32("Cells in the resolved spec.", minimum=0),
        "readyShards": I32("Shards whose Shard resource is Ready, over all databases.", minimum=0),
        "totalShards": I32("Shards in the resolved spec, over all databases.", minimum=0),
        "cells": M("Per-cell summary, keyed by cell name.", O("Summary of one cell.", {
            "ready": B("The Cell resource is Ready."),
            "gatewayReplicas": I32("Ready multigateway pods of the cell.", minimum=0),
        }), maxProperties=50),
        "databases": M("Per-database summary, keyed by database name.", O("Summary of one database.", {
            "readyShards": I32("Ready shards of the database.", minimum=0),
            "totalShards": I32("Shards of the database.", minimum=0),
        }), maxProperties=50),
        "globalTopoServer": O("Summary of the global topology server.", {
            "available": S("True, False or Unknown."),
            "serviceName": S("Client Service of the global etcd, or empty for an external one."),
        }),
        "multiadmin": O("Summary of multiadmin.", {
            "available": S("True, False or Unknown."),
            "serviceName": S("Service of multiadmin."),
        }),
        "topology": O("The cluster's records in Multigres's global topology (etcd).", {
            "globalRoot": S("Root of the global topology, e.g. /multigres/global.", maxLength=512),
            "registeredCells": A("Cells whose Cell record the operator wrote and has not pruned yet.",
                                 S("A cell name.", maxLength=63), maxItems=100, **{"x-kubernetes-list-type": "set"}),
            "registeredDatabases": A("Databases whose Database record the operator wrote and has not pruned yet.",
                                     S("A database name.", maxLength=63), maxItems=8,
                                     **{"x-kubernetes-list-type": "set"}),
        }),
        "gateway": O("External multigateway endpoint; absent unless spec.externalGateway is enabled.", {
            "externalEndpoint": S("Hostname or IP clients connect to; empty until provisioned."),
        }),
        "adminWeb": O("External multiadmin-web endpoint; absent unless spec.externalAdminWeb is enabled.", {
            "externalEndpoint": S("Hostname or IP of the web UI; empty until provisioned."),
        }),
        "resolvedTemplates": O("Templates the last successful reconcile resolved; a change to any of them triggers a "
                               "reconcile of this cluster.", {
                                   "coreTemplates": A("CoreTemplate names.", S("A name."), maxItems=100,
                                                      **{"x-kubernetes-list-type": "set"}),
                                   "cellTemplates": A("CellTemplate names.", S("A name."), maxItems=100,
                                                      **{"x-kubernetes-list-type": "set"}),
                                   "shardTemplates": A("ShardTemplate names.", S("A name."), maxItems=100,
                                                       **{"x-kubernetes-list-type": "set"}),
                               }),
        "images": O("Images in effect and the state of operator-default image rollouts.", {
            "updateStrategy": S("immediate or lazy: the image update strategy in effect."),
            "source": S("explicit (all pinned in spec.images), defaults (all operator defaults) or mixed."),
            "effective": component_images("The full image set used by the children now."),
            "applied": component_images("The operator-default image set the cluster is on; a component pinned in "
                                        "spec.images uses its pin instead. Absent when every image is pinned."),
            "appliedRevision": S("Revision of the applied default image set."),
            "available": component_images("The operator's current default image set, shown while a lazy rollout "
                                          "waits for spec.imageUpdatePolicy.acknowledgedRevision."),
            "availableRevision": S("Revision of the available default set; differs from appliedRevision while a "
                                   "rollout waits (lazy strategy)."),
        }),
    }))
    return root("MultigresCluster", "A Multigres cluster: the root resource users edit. The operator creates the "
                "TopoServer, Cell, TableGroup and Shard children and the multiadmin workloads from it.",
                spec, status, root_rules=[
                    rule("self.metadata.name.size() <= 25",
                         "MultigresCluster name must be at most 25 characters (it prefixes every child name); choose a shorter name"),
                ])


def component_images(desc):
    return O(desc, {c: S(f"{c} image.") for c in
                    ["multigateway", "multiorch", "multipooler", "multiadmin", "multiadminWeb", "postgres"]})


def core_template_schema():
    cel = True
    topo = O("The managed global topology server (etcd) used by clusters that reference this template.", {
        "etcd": etcd_spec("The managed etcd cluster.", cel),
        "pvcDeletionPolicy": pvc_policy("PVC lifecycle of the etcd volumes."),
        "placement": topo_placement("Scheduling settings for the etcd pods."),
    })
    spec = O("Reusable settings for a cluster's core components. Every field is optional; unset fields fall through "
             "to the next level of the defaults chain.", {
                 "globalTopoServer": topo,
                 "multiadmin": stateless("multiadmin settings.", cel),
                 "multiadminWeb": stateless("multiadmin-web settings.", cel),
             })
    return root("CoreTemplate", "Reusable configuration of the global topology server and multiadmin. Referenced by "
                "spec.templateDefaults.coreTemplate, spec.globalTopoServer.templateRef or spec.multiadmin.templateRef; "
                "a CoreTemplate named default is used by clusters that name none.",
                spec, template_status("CoreTemplate"))


def cell_template_schema():
    cel = True
    spec = O("Reusable cell settings. Every field is optional.", {
        "multigateway": multigateway_spec("multigateway settings.", cel),
        "multigatewayPlacement": placement("Scheduling settings for the multigateway pods."),
        "localTopoServer": local_topo("A topology server per cell. Unset: cells use the global one.", cel),
    })
    return root("CellTemplate", "Reusable configuration of a cell (multigateway, optional local topology server). "
                "Referenced by cells[].cellTemplate or spec.templateDefaults.cellTemplate; a CellTemplate named default "
                "is used by cells that name none.", spec, template_status("CellTemplate"))


def shard_template_schema():
    cel = True
    props = shard_common_props(cel)
    props["pools"] = pools_map("Pools by name (at most 8). Pools can be added, never removed.", cel, *TEMPLATE_POOL_KEY)
    props["pvcDeletionPolicy"] = pvc_policy("PVC lifecycle of the pools of shards using this template.")
    spec = O("Reusable shard settings. Every field is optional.", props)
    return root("ShardTemplate", "Reusable configuration of a shard (multiorch and pools). Referenced by "
                "shards[].shardTemplate or spec.templateDefaults.shardTemplate; a ShardTemplate named default is used "
                "by shards that name none.", spec, template_status("ShardTemplate"))


# --- Children: no CEL (the operator writes resolved, already validated values) ---


def cell_schema():
    cel = False
    spec = O("Resolved cell configuration, written by the operator.", {
        "name": cell_name("Cell name."),
        "zone": S("Availability-zone name.", maxLength=63),
        "zoneId": S("Availability-zone ID.", maxLength=63),
        "region": S("Region name.", maxLength=63),
        "metadata": S("Opaque document for the cell's topology record.", maxLength=4096),
        "images": O("Images used in this cell.", {
            "imagePullPolicy": S("Pull policy.", enum=["Always", "Never", "IfNotPresent"]),
            "imagePullSecrets": image_pull_secrets("Registry credentials."),
            "multigateway": image_ref("multigateway image."),
        }),
        "multigateway": multigateway_spec("Resolved multigateway settings.", cel),
        "multigatewayPlacement": placement("Scheduling settings for the multigateway pods."),
        "globalTopoServer": topo_ref("The global topology server."),
        "topoServer": local_topo("The cell's own topology server, if any.", cel),
        "allCells": A("Every cell of the cluster, for discovery.", cell_name("A cell name."), maxItems=50,
                      **{"x-kubernetes-list-type": "set"}),
        "topologyReconciliation": O("What the cell controller does in the topology.", {
            "registerCell": B("Register the cell in the global topology."),
            "prunePoolers": B("Mark topology entries of poolers without a pod as shut down."),
        }),
        "observability": observability(),
        "logLevels": log_levels(),
        "internalTLS": internal_tls("Resolved internal mTLS setting."),
        "certCommonName": S("DNS name of the public PostgreSQL TLS certificate.", maxLength=253),
    }, required=["name"])
    status = O("Observed state of the cell.", dict(base_status("Cell"), **{
        "gatewayReplicas": I32("Desired multigateway pods.", minimum=0),
        "gatewayReadyReplicas": I32("Ready multigateway pods.", minimum=0),
        "gatewayServiceName": S("Name of the cell's multigateway Service.", maxLength=253),
    }))
    return root("Cell", "A cell of a MultigresCluster (one failure domain). Owned and written by the operator; "
                "manual edits are reverted.", spec, status)


def shard_resolved(cel):
    props = shard_common_props(cel)
    props = dict({"name": S("Shard name.", minLength=1, maxLength=63)}, **props)
    props["pools"] = pools_map("Resolved pools by name.", cel, *TEMPLATE_POOL_KEY, children=True)
    props["pvcDeletionPolicy"] = pvc_policy("Resolved PVC lifecycle.")
    props["backup"] = backup("Resolved backup settings.", cel)
    return props


def tablegroup_schema():
    cel = False
    spec = O("Resolved table group configuration, written by the operator.", {
        "databaseName": S("Database name.", minLength=1, maxLength=30),
        "tableGroupName": S("Table group name.", minLength=1, maxLength=25),
        "default": B("This is the database's default table group."),
        "images": shard_images(),
        "globalTopoServer": topo_ref("The global topology server."),
        "shards": A("Resolved shards; the operator creates one Shard resource per entry.",
                    O("One resolved shard.", shard_resolved(cel), required=["name"]), maxItems=32,
                    **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
        "pvcDeletionPolicy": pvc_policy("Resolved PVC lifecycle."),
        "observability": observability(),
        "logLevels": log_levels(),
        "backup": backup("Resolved backup settings.", cel),
        "cellTopologyLabels": M("Node-selector labels per cell name, e.g. topology.kubernetes.io/zone.",
                                M("Labels of one cell.", S("Label value.")), maxProperties=50),
        "topologyPruning": O("Removal of stale topology entries.", {"enabled": B("Pruning on.")}),
        "durabilityPolicy": S("Resolved durability policy.", maxLength=64),
        "postgresSuperuser": S("Resolved superuser name.", maxLength=63),
        "postgresPasswordSecretRef": secret_key_ref("Secret with the superuser password.", ["name", "key"]),
        "postgresInitSecretsRef": secret_key_ref("Secret with day-0 init settings.", ["name"]),
        "internalTLS": internal_tls("Resolved internal mTLS setting."),
    }, required=["databaseName", "tableGroupName"])
    status = O("Observed state of the table group.", dict(base_status("TableGroup"), **{
        "readyShards": I32("Shards that are Ready.", minimum=0),
        "totalShards": I32("Shards of the table group.", minimum=0),
    }))
    return root("TableGroup", "A table group of a MultigresCluster database. Owned and written by the operator; "
                "it owns the Shard resources.", spec, status)


def shard_schema():
    cel = False
    props = {
        "databaseName": S("Database name.", minLength=1, maxLength=30),
        "tableGroupName": S("Table group name.", minLength=1, maxLength=25),
        "shardName": S("Shard name, e.g. 0-inf.", minLength=1, maxLength=25),
        "images": shard_images(),
        "globalTopoServer": topo_ref("The global topology server."),
    }
    props.update(shard_common_props(cel))
    props.update({
        "pools": pools_map("Resolved pools by name.", cel, *TEMPLATE_POOL_KEY, children=True),
        "pvcDeletionPolicy": pvc_policy("Resolved PVC lifecycle."),
        "observability": observability(),
        "logLevels": log_levels(),
        "backup": backup("Resolved backup settings.", cel),
        "topologyPruning": O("Removal of stale topology entries.", {"enabled": B("Pruning on.")}),
        "durabilityPolicy": S("Resolved durability policy.", maxLength=64),
        "postgresSuperuser": S("Resolved superuser name.", maxLength=63),
        "postgresPasswordSecretRef": secret_key_ref("Secret with the superuser password.", ["name", "key"]),
        "postgresInitSecretsRef": secret_key_ref("Secret with day-0 init settings.", ["name"]),
        "internalTLS": internal_tls("Resolved internal mTLS setting."),
        "cellTopologyLabels": M("Node-selector labels per cell name.", M("Labels of one cell.", S("Label value.")),
                                maxProperties=50),
        "replicas": I32("Total desired pool pods over all pools and cells.", minimum=0),
    })
    spec = O("Resolved shard configuration, written by the operator.", props,
             required=["databaseName", "tableGroupName", "shardName"])
    status = O("Observed state of the shard.", dict(base_status("Shard"), **{
        "replicas": I32("Desired pool pods over all pools and cells.", minimum=0),
        "readyReplicas": I32("Ready pool pods over all pools and cells.", minimum=0),
        "primaryCell": S("Cell of the current primary."),
        "cells": A("Cells the shard runs in.", S("A cell name."), maxItems=50, **{"x-kubernetes-list-type": "set"}),
        "orchReady": B("The shard's multiorch pods are ready."),
        "poolsReady": B("Every pool has all its pods ready."),
        "podRoles": M("Role of each pool pod as seen in the topology (PRIMARY, REPLICA, DRAINED...).", S("A role.")),
        "lastBackupTime": S("Completion time of the latest backup.", format="date-time"),
        "lastBackupType": S("Type of the latest backup: full, diff or incr."),
        "backupSchedule": O("The operator's scheduled backups of this shard (backup.schedule); kept here so a "
                            "restarted operator knows them.", {
                                "schedule": S("The cron schedule in force."),
                                "lastRun": S("Scheduled time of the last backup the operator asked for.",
                                             format="date-time"),
                                "lastJobId": S("multiadmin's job id of that backup."),
                                "lastResult": S("What multiadmin said of that job: Pending, Running, Completed, "
                                                "Failed, Unknown."),
                                "nextRun": S("When the next backup is due (the scheduled minute plus this shard's "
                                             "jitter).", format="date-time"),
                                "missedRuns": I32("Runs missed since the operator started (due more than 10 minutes "
                                                  "ago when noticed).", minimum=0),
                            }),
    }))
    return root("Shard", "A shard of a table group: its multiorch and its pools of postgres + multipooler pods. "
                "Owned and written by the operator.", spec, status)


def toposerver_schema():
    cel = False
    spec = O("Resolved topology server configuration, written by the operator.", {
        "etcd": etcd_spec("The managed etcd cluster.", cel),
        "pvcDeletionPolicy": pvc_policy("Resolved PVC lifecycle."),
        "placement": topo_placement("Scheduling settings for the etcd pods."),
        "tls": O("Serving certificate of the etcd members.", {
            "enabled": B("Issue a serving certificate for etcd."),
            "issuerName": S("cert-manager issuer of that certificate.", maxLength=253),
        }),
    }, required=["etcd"])
    status = O("Observed state of the topology server.", dict(base_status("TopoServer"), **{
        "replicas": I32("Desired etcd members.", minimum=0),
        "readyReplicas": I32("Ready etcd members.", minimum=0),
        "clientService": S("Name of the client Service (port 2379)."),
        "peerService": S("Name of the headless peer Service."),
        "healthCheckedAt": S("Completion time of the latest direct etcd health check.", format="date-time"),
        "etcdMaintenance": O("The latest automatic defragmentation.", {
            "lastAttemptTime": S("When it started.", format="date-time"),
            "endpoint": S("Member it targeted."),
            "inProgress": B("True until every member is healthy again; pod rollouts wait meanwhile."),
        }),
    }))
    return root("TopoServer", "An operator-managed etcd cluster holding Multigres topology (global, or local to a "
                "cell). Owned and written by the operator.", spec, status)


# ---------------------------------------------------------------------------
# CRD assembly
# ---------------------------------------------------------------------------


def root(kind, desc, spec, status, root_rules=None):
    # A new object reads as status {observedGeneration: 0} until the operator
    # writes one (defaulting applies on every read from etcd): kstatus, Flux's
    # wait and Argo CD's health then see "not yet observed" (InProgress), not
    # "no status, so Current", in the first moments after an apply.
    status = dict(status, default={})
    status["properties"] = dict(status["properties"])
    status["properties"]["observedGeneration"] = dict(status["properties"]["observedGeneration"], default=0)
    s = O(desc, {
        "apiVersion": S("Versioned schema of this object: multigres.com/v1alpha1."),
        "kind": S(f"The REST resource kind: {kind}."),
        "metadata": {"type": "object"},
        "spec": spec,
        "status": status,
    })
    if root_rules:
        s["x-kubernetes-validations"] = root_rules
    return s


READY = {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
         "description": "Status of the Ready condition."}
PHASE = {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Summary state."}
AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def col(name, typ, path, desc, priority=None):
    c = {"name": name, "type": typ, "jsonPath": path, "description": desc}
    if priority:
        c["priority"] = priority
    return c


KINDS = [
    ("MultigresCluster", "multigresclusters", ["mgc"], cluster_schema, [
        READY, PHASE,
        col("Cells", "integer", ".status.readyCells", "Ready cells."),
        col("Shards", "integer", ".status.readyShards", "Ready shards."),
        col("Available", "string", '.status.conditions[?(@.type=="Available")].status',
            "Status of the Available condition.", 1),
        col("Message", "string", ".status.message", "Detail about the phase.", 1),
        AGE]),
    ("CoreTemplate", "coretemplates", ["cot"], core_template_schema, [
        READY, col("Consumers", "string", ".status.consumers", "Clusters using this template.", 1), AGE]),
    ("CellTemplate", "celltemplates", ["cet"], cell_template_schema, [
        READY, col("Consumers", "string", ".status.consumers", "Clusters using this template.", 1), AGE]),
    ("ShardTemplate", "shardtemplates", ["sht"], shard_template_schema, [
        READY, col("Consumers", "string", ".status.consumers", "Clusters using this template.", 1), AGE]),
    ("Cell", "cells", ["cel"], cell_schema, [
        READY, PHASE,
        col("Gateways", "integer", ".status.gatewayReadyReplicas", "Ready multigateway pods."),
        col("Desired", "integer", ".status.gatewayReplicas", "Desired multigateway pods."),
        col("Zone", "string", ".spec.zone", "Availability zone.", 1),
        col("Region", "string", ".spec.region", "Region.", 1),
        AGE]),
    ("TableGroup", "tablegroups", ["tbg"], tablegroup_schema, [
        READY, PHASE,
        col("Shards", "integer", ".status.readyShards", "Ready shards."),
        col("Total", "integer", ".status.totalShards", "Shards."),
        AGE]),
    ("Shard", "shards", ["srd"], shard_schema, [
        READY, PHASE,
        col("Pods", "integer", ".status.readyReplicas", "Ready pool pods."),
        col("Desired", "integer", ".status.replicas", "Desired pool pods."),
        col("Primary", "string", ".status.primaryCell", "Cell of the primary.", 1),
        AGE]),
    ("TopoServer", "toposervers", ["tps"], toposerver_schema, [
        READY, PHASE,
        col("Members", "integer", ".status.readyReplicas", "Ready etcd members."),
        col("Desired", "integer", ".status.replicas", "Desired etcd members."),
        AGE]),
]


def crd(kind, plural, short, schema_fn, columns):
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": "multigres-operator",
                "app.kubernetes.io/part-of": "multigres-operator",
            },
            "annotations": {"multigres.com/schema-version": str(SCHEMA_VERSION)},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": kind + "List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": ["multigres"],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": schema_fn()},
            }],
        },
    }


# ---------------------------------------------------------------------------
# A minimal YAML emitter (block style, no anchors)
# ---------------------------------------------------------------------------

PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
RESERVED = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"}


SAFE_TEXT = re.compile(r"^[A-Za-z(][\x20-\x7e]*$")


def plain_ok(v):
    """True when v can be written as a YAML plain scalar and reads back as the same string."""
    if v.lower() in RESERVED or not SAFE_TEXT.match(v):
        return False
    if v != v.strip() or ": " in v or " #" in v or v.endswith(":"):
        return False
    return not any(c in v for c in "{}[],&*!|>'\"%@`\\")


def scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    if PLAIN.match(v) and v.lower() not in RESERVED:
        return v
    if plain_ok(v):
        return v
    return json.dumps(v, ensure_ascii=True)


def emit(v, indent, out):
    pad = "  " * indent
    if isinstance(v, dict):
        if not v:
            out.append(" {}")
            return
        first = True
        for k, x in v.items():
            line = f"{pad}{scalar(k)}:"
            out.append(("\n" if out and not out[-1].endswith("\n") else "") + line)
            if isinstance(x, (dict, list)) and x:
                if isinstance(x, list):
                    emit(x, indent, out)
                else:
                    emit(x, indent + 1, out)
            elif isinstance(x, dict):
                out.append(" {}")
            elif isinstance(x, list):
                out.append(" []")
            else:
                out.append(" " + scalar(x))
            first = False
    elif isinstance(v, list):
        for x in v:
            if isinstance(x, dict) and x:
                # "- " then first key on the same line
                sub = []
                emit(x, indent + 1, sub)
                text = "".join(sub).lstrip("\n")
                text = pad + "- " + text[len(pad) + 2:]
                out.append("\n" + text)
            else:
                out.append("\n" + pad + "- " + scalar(x))


def to_yaml(doc):
    out = []
    emit(doc, 0, out)
    return "".join(out).lstrip("\n") + "\n"


def main():
    docs = [crd(*k) for k in KINDS]
    sys.stdout.write("# Generated by config/crd/gen-crds.py; do not edit by hand.\n"
                     "# CustomResourceDefinitions for multigres.com/v1alpha1 (multigres-op). See docs/api.md.\n")
    for d in docs:
        sys.stdout.write("---\n")
        sys.stdout.write(to_yaml(d))


if __name__ == "__main__":
    main()
