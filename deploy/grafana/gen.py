#!/usr/bin/env python3
"""Writes the iom Grafana dashboards (deploy/grafana/dashboards/*.json).

Dashboards as code: edit this file, run `python3 deploy/grafana/gen.py`, commit
both. Stable uids (iom-farm, iom-node, iom-services), "id": null, a `datasource`
variable that every panel uses, so the files load into any Grafana whose
Prometheus datasource has another uid. tests/it/observe.rs checks the JSON, runs
every expression against a real Prometheus and checks every metric name against a
live /metrics.
"""
import json
import os

DS = {"type": "prometheus", "uid": "${datasource}"}
WORK = 'queue=~".+[.]tasks[.].+"'
RETRY = 'queue=~".+[.]retry[.].+"'
DEAD = 'queue=~".+[.]dead"'


class Board:
    def __init__(self, uid, title, description, variables=()):
        self.uid, self.title, self.description = uid, title, description
        self.panels, self.x, self.y, self.row_h = [], 0, 0, 0
        self.variables = list(variables)
        self.next_id = 1

    def row(self, title):
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        self.panels.append({"type": "row", "title": title, "id": self._id(), "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def _id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def panel(self, kind, title, targets, w=12, h=8, unit="short", description="", **extra):
        if self.x + w > 24:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        p = {
            "type": kind,
            "title": title,
            "description": description,
            "id": self._id(),
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "targets": [
                {"datasource": DS, "refId": chr(ord("A") + i), "expr": e, "legendFormat": l,
                 **({"instant": True, "format": "table"} if kind == "table" else {})}
                for i, (e, l) in enumerate(targets)
            ],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
        }
        if kind == "timeseries":
            p["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10}
            p["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                            "tooltip": {"mode": "multi", "sort": "desc"}}
        if kind == "stat":
            p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                            "colorMode": "value", "graphMode": "area"}
        p.update(extra)
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)

    def json(self):
        return {
            "id": None,
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["iom"],
            "timezone": "browser",
            "editable": True,
            "graphTooltip": 1,
            "refresh": "30s",
            "schemaVersion": 39,
            "version": 1,
            "time": {"from": "now-6h", "to": "now"},
            "links": [{"title": "iom dashboards", "type": "dashboards", "tags": ["iom"], "asDropdown": True}],
            "templating": {"list": [
                {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                 "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
                *self.variables,
            ]},
            "annotations": {"list": []},
            "panels": self.panels,
        }


def query_var(name, label, query, multi=True):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
            "refresh": 2, "includeAll": multi, "multi": multi, "allValue": ".*",
            "current": {}, "options": [], "sort": 1, "hide": 0}


def farm():
    b = Board("iom-farm", "iom / Farm overview",
              "Throughput, failures, queue depth, step durations, retries and dead letters across every iom worker.")
    b.row("Now")
    b.panel("stat", "Workers up", [('count(up{job="iom-worker"} == 1)', "")], w=4, h=4)
    b.panel("stat", "Tasks in progress", [("sum(iom_tasks_in_progress)", "")], w=4, h=4)
    b.panel("stat", "Waiting in work queues", [(f"sum(max by (queue) (iom_queue_messages{{{WORK}}}))", "")], w=4, h=4)
    b.panel("stat", "Dead letters", [(f"sum(max by (queue) (iom_queue_messages{{{DEAD}}}))", "")], w=4, h=4,
            description="Messages in the dead-letter queue: `iom dlq list` shows them, `iom dlq requeue` replays them.")
    b.panel("stat", "Finished / min", [('sum(rate(iom_tasks_finished_total{outcome=~"succeeded|already_done"}[5m])) * 60', "")], w=4, h=4)
    b.panel("stat", "Written / s", [("sum(rate(iom_bytes_written_total[5m]))", "")], w=4, h=4, unit="Bps")
    b.row("Throughput and failures")
    b.panel("timeseries", "Tasks finished by step", [
        ('sum by (kind) (rate(iom_tasks_finished_total{outcome=~"succeeded|already_done"}[$__rate_interval]))', "{{kind}}")],
        unit="ops")
    b.panel("timeseries", "Failures by step and outcome", [
        ('sum by (kind, outcome) (rate(iom_tasks_finished_total{outcome=~"retry_scheduled|dead_lettered|unsettled"}[$__rate_interval]))',
         "{{kind}} {{outcome}}")], unit="ops",
        description="retry_scheduled: transient failure, retried after a delay tier; dead_lettered: failed for good; unsettled: the broker will redeliver.")
    b.panel("timeseries", "Tasks received by step", [
        ("sum by (kind) (rate(iom_tasks_received_total[$__rate_interval]))", "{{kind}}")], unit="ops")
    b.panel("timeseries", "Tasks in progress by step", [("sum by (kind) (iom_tasks_in_progress)", "{{kind}}")])
    b.row("Queues")
    b.panel("timeseries", "Work queue depth", [(f"max by (queue) (iom_queue_messages{{{WORK}}})", "{{queue}}")])
    b.panel("timeseries", "Consumers per work queue", [(f"max by (queue) (iom_queue_consumers{{{WORK}}})", "{{queue}}")])
    b.panel("timeseries", "Retry tiers (delayed retries waiting)", [(f"max by (queue) (iom_queue_messages{{{RETRY}}})", "{{queue}}")])
    b.panel("timeseries", "Dead-letter queue", [(f"max by (queue) (iom_queue_messages{{{DEAD}}})", "{{queue}}")])
    b.row("Durations")
    b.panel("timeseries", "p95 step duration by step", [
        ('histogram_quantile(0.95, sum by (kind, le) (rate(iom_step_duration_seconds_bucket{outcome="ok"}[$__rate_interval])))', "{{kind}}")],
        unit="s")
    b.panel("timeseries", "p95 queue wait (publish to start) by step", [
        ("histogram_quantile(0.95, sum by (kind, le) (rate(iom_queue_wait_seconds_bucket[$__rate_interval])))", "{{kind}}")],
        unit="s", description="Includes the delay of a retry tier for retried tasks.")
    b.row("Retries and dead letters")
    b.panel("timeseries", "Retries scheduled by step", [
        ("sum by (kind) (rate(iom_task_retries_total[$__rate_interval]))", "{{kind}}")], unit="ops")
    b.panel("timeseries", "Redeliveries by step", [
        ("sum by (kind) (rate(iom_task_redeliveries_total[$__rate_interval]))", "{{kind}}")], unit="ops",
        description="The broker redelivered an unacknowledged task (a worker died or lost its connection).")
    b.panel("timeseries", "Dead-lettered by step and class (per hour)", [
        ("sum by (kind, class) (increase(iom_tasks_dead_lettered_total[1h]))", "{{kind}} {{class}}")])
    b.panel("timeseries", "Data rate", [
        ("sum(rate(iom_bytes_read_total[$__rate_interval]))", "read"),
        ("sum(rate(iom_bytes_written_total[$__rate_interval]))", "written")], unit="Bps")
    return b


def node():
    sel = 'node=~"$node"'
    b = Board("iom-node", "iom / Node",
              "One farm node: its workers' tasks, durations, IO, broker health and process resources.",
              [query_var("node", "Node", 'label_values(iom_build_info{job="iom-worker"}, node)')])
    b.row("Tasks")
    b.panel("timeseries", "Tasks in progress", [(f"sum by (instance, kind) (iom_tasks_in_progress{{{sel}}})", "{{instance}} {{kind}}")])
    b.panel("timeseries", "Finished by outcome", [
        (f"sum by (kind, outcome) (rate(iom_tasks_finished_total{{{sel}}}[$__rate_interval]))", "{{kind}} {{outcome}}")], unit="ops")
    b.panel("timeseries", "p95 step duration", [
        (f'histogram_quantile(0.95, sum by (kind, le) (rate(iom_step_duration_seconds_bucket{{{sel},outcome="ok"}}[$__rate_interval])))', "{{kind}}")],
        unit="s")
    b.panel("timeseries", "Since the last success", [
        (f"time() - max by (kind) (iom_last_success_timestamp_seconds{{{sel}}} > 0)", "{{kind}}")], unit="s")
    b.row("IO")
    b.panel("timeseries", "Bytes read / written", [
        (f"sum by (kind) (rate(iom_bytes_read_total{{{sel}}}[$__rate_interval]))", "read {{kind}}"),
        (f"sum by (kind) (rate(iom_bytes_written_total{{{sel}}}[$__rate_interval]))", "written {{kind}}")], unit="Bps")
    b.panel("timeseries", "Frames processed", [
        (f"sum by (kind) (rate(iom_frames_processed_total{{{sel}}}[$__rate_interval]))", "{{kind}}")], unit="ops")
    b.row("Broker")
    b.panel("timeseries", "Publishes not confirmed", [
        (f"sum by (reason) (increase(iom_amqp_publish_failures_total{{{sel}}}[$__rate_interval]))", "{{reason}}")])
    b.panel("timeseries", "Reconnections to RabbitMQ", [
        (f"sum by (instance) (increase(iom_amqp_reconnects_total{{{sel}}}[$__rate_interval]))", "{{instance}}")])
    b.row("Process")
    b.panel("timeseries", "CPU", [
        (f"rate(iom_process_cpu_seconds_total{{{sel}}}[$__rate_interval])", "{{instance}}")], unit="percentunit", w=8)
    b.panel("timeseries", "Resident memory", [
        (f"iom_process_resident_memory_bytes{{{sel}}}", "{{instance}}")], unit="bytes", w=8)
    b.panel("timeseries", "Open file descriptors", [
        (f"iom_process_open_fds{{{sel}}}", "{{instance}}")], w=8)
    b.panel("table", "Versions", [(f"iom_build_info{{{sel}}}", "")], w=24, h=5)
    return b


def services():
    b = Board("iom-services", "iom / Tracker and Tractor",
              "Health of the services iom talks to: the tracker (ShotGrid) and the Tractor mirror (iom-bridge).")
    b.row("Tracker (ShotGrid)")
    b.panel("timeseries", "Requests by status class", [
        ("sum by (status_class) (rate(iom_tracker_request_duration_seconds_count[$__rate_interval]))", "{{status_class}}")], unit="reqps")
    b.panel("timeseries", "Errors by operation and status class", [
        ("sum by (op, status_class) (rate(iom_tracker_request_errors_total[$__rate_interval]))", "{{op}} {{status_class}}")], unit="reqps")
    b.panel("timeseries", "Latency p50 / p95 by operation", [
        ("histogram_quantile(0.5, sum by (op, le) (rate(iom_tracker_request_duration_seconds_bucket[$__rate_interval])))", "p50 {{op}}"),
        ("histogram_quantile(0.95, sum by (op, le) (rate(iom_tracker_request_duration_seconds_bucket[$__rate_interval])))", "p95 {{op}}")],
        unit="s")
    b.panel("stat", "Tracker error ratio (5 min)", [
        ('sum(rate(iom_tracker_request_errors_total{status_class=~"5xx|network|timeout"}[5m])) / sum(rate(iom_tracker_request_duration_seconds_count[5m]))', "")],
        unit="percentunit")
    b.row("Tractor mirror (iom-bridge)")
    b.panel("stat", "Bridge up", [('max(up{job="iom-bridge"})', "")], w=6, h=5)
    b.panel("stat", "Queue depths read ago", [("time() - max(iom_queue_depth_updated_timestamp_seconds)", "")], w=6, h=5, unit="s")
    b.panel("stat", "Events mirrored / min", [("sum(rate(iom_tractor_sync_lag_seconds_count[5m])) * 60", "")], w=6, h=5)
    b.panel("stat", "Bridge RSS", [('max(iom_process_resident_memory_bytes{job="iom-bridge"})', "")], w=6, h=5, unit="bytes")
    b.panel("timeseries", "Tractor sync lag p50 / p95", [
        ("histogram_quantile(0.5, sum by (le) (rate(iom_tractor_sync_lag_seconds_bucket[$__rate_interval])))", "p50"),
        ("histogram_quantile(0.95, sum by (le) (rate(iom_tractor_sync_lag_seconds_bucket[$__rate_interval])))", "p95")],
        unit="s", description="From a task state change to the bridge having it in Tractor (the graph's job spooled).")
    b.panel("timeseries", "Broker: publishes not confirmed, reconnections", [
        ("sum by (reason) (increase(iom_amqp_publish_failures_total[$__rate_interval]))", "not confirmed: {{reason}}"),
        ("sum(increase(iom_amqp_reconnects_total[$__rate_interval]))", "reconnections")])
    return b


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboards")
    os.makedirs(out, exist_ok=True)
    for name, board in (("farm", farm()), ("node", node()), ("services", services())):
        with open(os.path.join(out, f"iom-{name}.json"), "w") as f:
            json.dump(board.json(), f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
