//! The publish work folder: manifest, attempt fencing, exclusive completion,
//! fan-in claims under a real race, status and resume after a simulated crash.

use std::path::Path;
use std::sync::{Arc, Barrier};

use super::support::{output, publish_info};
use iom::error::{Classify, ErrorClass};
use iom::store::{
    Begin, Claim, Completed, CompletionRecord, FailureRecord, GraphState, OutputFile, StoreError,
    TaskState, WorkDir,
};
use iom::task::{
    graph_id, task_id, Graph, GraphId, Step, StepKind, TaskId, TaskNode, SCHEMA_VERSION,
};

/// `kinds` with their dependencies (by kind), as a graph in `work`.
fn graph_of(work: &Path, edges: &[(StepKind, &[StepKind])]) -> Graph {
    let id: GraphId = graph_id("p", "A_0010", "plate.", "org", 1);
    let t = |k| task_id(&id, k, "");
    Graph {
        schema: SCHEMA_VERSION,
        id: id.clone(),
        info: publish_info(),
        work_dir: work.to_path_buf(),
        nodes: edges
            .iter()
            .map(|(k, deps)| TaskNode {
                id: t(*k),
                label: k.to_string(),
                step: Step::Cleanup { output: output() },
                deps: deps.iter().map(|d| t(*d)).collect(),
            })
            .collect(),
    }
}

/// probe → copy → {thumbnail, proxy} → register → cleanup.
fn pipeline(work: &Path) -> Graph {
    use StepKind::*;
    graph_of(
        work,
        &[
            (Probe, &[]),
            (Copy, &[Probe]),
            (Thumbnail, &[Copy]),
            (Proxy, &[Copy]),
            (Register, &[Thumbnail, Proxy]),
            (Cleanup, &[Register]),
        ],
    )
}

fn tid(g: &Graph, k: StepKind) -> TaskId {
    task_id(&g.id, k, "")
}

fn record(task: &TaskId, attempt: u32, worker: &str) -> CompletionRecord {
    CompletionRecord {
        task_id: task.clone(),
        attempt,
        worker: worker.into(),
        started_at_ms: 1_000,
        finished_at_ms: 3_500,
        outputs: vec![OutputFile {
            path: format!("/out/{worker}").into(),
            size: 3,
            xxh3: "0123456789abcdef".into(),
        }],
        summary: serde_json::json!({ "by": worker }),
    }
}

#[test]
fn create_is_idempotent_for_the_same_graph_and_refuses_a_different_one() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let g = pipeline(&work);
    let w = WorkDir::create(&g).unwrap();
    assert!(work.join("manifest.json").is_file());
    assert_eq!(w.path(), work.as_path());
    // Re-submit of the same graph: fine, and nothing changes.
    let before = std::fs::read(work.join("manifest.json")).unwrap();
    WorkDir::create(&g).unwrap();
    assert_eq!(std::fs::read(work.join("manifest.json")).unwrap(), before);

    let opened = WorkDir::open(&work).unwrap();
    assert_eq!(opened.manifest().unwrap(), g.clone().validated().unwrap());

    let mut other = g.clone();
    other.nodes[2].label = "thumbnail (changed)".into();
    let e = WorkDir::create(&other).unwrap_err();
    assert!(matches!(e, StoreError::ManifestMismatch { .. }), "{e}");
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(e.to_string().contains(&work.display().to_string()), "{e}");
    assert_eq!(std::fs::read(work.join("manifest.json")).unwrap(), before);

    let e = WorkDir::open(tmp.path()).unwrap_err();
    assert!(matches!(e, StoreError::NotAWorkDir { .. }), "{e}");
    assert!(e.to_string().contains("no manifest.json"), "{e}");
}

#[test]
fn a_graph_with_an_unsafe_task_id_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let mut g = pipeline(&work);
    let bad = TaskId("../../etc/passwd".into());
    g.nodes[0].id = bad.clone();
    g.nodes[1].deps = vec![bad];
    let e = WorkDir::create(&g).unwrap_err();
    assert!(matches!(e, StoreError::BadTaskId { .. }), "{e}");
    assert!(!work.join("manifest.json").exists());

    let w = WorkDir::create(&pipeline(&work)).unwrap();
    let e = w.begin_attempt(&TaskId("a/b".into()), 1, "w1").unwrap_err();
    assert!(matches!(e, StoreError::BadTaskId { .. }), "{e}");
}

#[test]
fn a_lower_attempt_after_a_higher_one_started_is_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let g = pipeline(tmp.path());
    let w = WorkDir::create(&g).unwrap();
    let copy = tid(&g, StepKind::Copy);

    assert_eq!(w.begin_attempt(&copy, 2, "host-b").unwrap(), Begin::Run);
    assert_eq!(
        w.begin_attempt(&copy, 1, "host-a").unwrap(),
        Begin::Stale { current: 2 }
    );
    // A redelivery of the current attempt runs again (its worker may have died).
    assert_eq!(w.begin_attempt(&copy, 2, "host-c").unwrap(), Begin::Run);
    assert_eq!(w.current_attempt(&copy).unwrap(), Some(2));
    assert_eq!(w.latest_run(&copy).unwrap().unwrap().worker, "host-c");
    assert_eq!(w.begin_attempt(&copy, 3, "host-d").unwrap(), Begin::Run);

    // Once complete, any attempt is told so (and given the record).
    let rec = record(&copy, 3, "host-d");
    assert_eq!(w.complete(&rec).unwrap(), Completed::Recorded);
    assert_eq!(
        w.begin_attempt(&copy, 4, "host-e").unwrap(),
        Begin::AlreadyDone(rec.clone())
    );
    assert_eq!(
        w.begin_attempt(&copy, 1, "host-a").unwrap(),
        Begin::AlreadyDone(rec)
    );
    assert!(w.begin_attempt(&copy, 0, "x").is_err());
}

#[test]
fn the_first_completion_wins_and_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let g = pipeline(tmp.path());
    let w = WorkDir::create(&g).unwrap();
    let probe = tid(&g, StepKind::Probe);
    assert_eq!(w.completion(&probe).unwrap(), None);

    let first = record(&probe, 2, "host-a");
    let late = record(&probe, 1, "host-b");
    assert_eq!(w.complete(&first).unwrap(), Completed::Recorded);
    assert_eq!(
        w.complete(&late).unwrap(),
        Completed::AlreadyComplete(first.clone())
    );
    assert_eq!(w.completion(&probe).unwrap(), Some(first.clone()));
    // Only the record is left: no temporary files pile up.
    assert_eq!(
        std::fs::read_dir(tmp.path().join("tmp")).unwrap().count(),
        0
    );
    // A failure report after success is ignored: success stands.
    w.record_failure(&FailureRecord {
        task_id: probe.clone(),
        attempt: 3,
        worker: "host-c".into(),
        at_ms: 9_999,
        class: ErrorClass::Permanent,
        reason: "late".into(),
        dead_lettered: true,
    })
    .unwrap();
    assert_eq!(w.failure(&probe).unwrap(), None);
    assert!(matches!(
        w.status().unwrap().task(&probe).unwrap().state,
        TaskState::Succeeded { attempt: 2, .. }
    ));
}

#[test]
fn a_superseded_attempt_cannot_record_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let g = pipeline(tmp.path());
    let w = WorkDir::create(&g).unwrap();
    let copy = tid(&g, StepKind::Copy);
    let fail = |attempt| FailureRecord {
        task_id: copy.clone(),
        attempt,
        worker: "host-a".into(),
        at_ms: iom::store::now_ms(),
        class: ErrorClass::Permanent,
        reason: format!("attempt {attempt} broke"),
        dead_lettered: true,
    };
    w.begin_attempt(&copy, 1, "host-a").unwrap();
    w.begin_attempt(&copy, 2, "host-b").unwrap();
    w.record_failure(&fail(1)).unwrap();
    assert_eq!(w.failure(&copy).unwrap(), None, "stale failure recorded");
    assert!(matches!(
        w.status().unwrap().task(&copy).unwrap().state,
        TaskState::Running { attempt: 2, .. }
    ));

    w.record_failure(&fail(2)).unwrap();
    assert_eq!(w.failure(&copy).unwrap().unwrap().attempt, 2);
    let st = w.status().unwrap();
    assert_eq!(st.state, GraphState::Failed);
    match &st.task(&copy).unwrap().state {
        TaskState::Failed {
            reason,
            class,
            attempt,
        } => {
            assert_eq!(reason, "attempt 2 broke");
            assert_eq!(*class, ErrorClass::Permanent);
            assert_eq!(*attempt, 2);
        }
        other => panic!("{other:?}"),
    }
    // A failed task is not resumed.
    assert!(!w.ready_to_resume(true).unwrap().contains(&copy));
}

#[test]
fn fan_in_race_dispatches_the_child_exactly_once() {
    use StepKind::*;
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..200 {
        let work = tmp.path().join(format!("w{round}"));
        // Two parents (probe, copy: independent here) join into register.
        let g = graph_of(
            &work,
            &[(Probe, &[]), (Copy, &[]), (Register, &[Probe, Copy])],
        );
        let w = Arc::new(WorkDir::create(&g).unwrap());
        let g = Arc::new(g);
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = [Probe, Copy]
            .into_iter()
            .map(|parent| {
                let (w, g, barrier) = (w.clone(), g.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let me = task_id(&g.id, parent, "");
                    barrier.wait();
                    assert_eq!(
                        w.complete(&record(&me, 1, parent.as_str())).unwrap(),
                        Completed::Recorded
                    );
                    let mut won = Vec::new();
                    for child in w.ready_children(&g, &me).unwrap() {
                        if w.claim_dispatch(&child, &me).unwrap() == Claim::Won {
                            won.push(child);
                        }
                    }
                    won
                })
            })
            .collect();
        let won: Vec<TaskId> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(
            won,
            vec![task_id(&g.id, Register, "")],
            "round {round}: the child must be won exactly once"
        );
    }
}

#[test]
fn a_crash_between_claim_and_publish_is_resumable() {
    let tmp = tempfile::tempdir().unwrap();
    let g = pipeline(tmp.path());
    let w = WorkDir::create(&g).unwrap();
    let (probe, copy) = (tid(&g, StepKind::Probe), tid(&g, StepKind::Copy));

    // Nothing submitted yet: the root is what resume would publish.
    assert_eq!(w.undispatched_ready().unwrap(), vec![probe.clone()]);
    let st = w.status().unwrap();
    assert_eq!(st.state, GraphState::Running);
    assert!(st.tasks.iter().all(|t| t.state == TaskState::Waiting));

    w.mark_dispatched(&probe).unwrap();
    w.mark_dispatched(&probe).unwrap(); // idempotent
    assert!(w.is_dispatched(&probe).unwrap());
    assert_eq!(
        w.status().unwrap().task(&probe).unwrap().state,
        TaskState::Dispatched
    );
    assert!(w.undispatched_ready().unwrap().is_empty());
    // With the flag, a dispatched root nobody started is offered again.
    assert_eq!(w.ready_to_resume(true).unwrap(), vec![probe.clone()]);

    assert_eq!(w.begin_attempt(&probe, 1, "host-a").unwrap(), Begin::Run);
    assert!(w.ready_to_resume(true).unwrap().is_empty());
    assert!(matches!(
        w.status().unwrap().task(&probe).unwrap().state,
        TaskState::Running { attempt: 1, ref worker, .. } if worker == "host-a"
    ));
    w.complete(&record(&probe, 1, "host-a")).unwrap();
    assert_eq!(w.ready_children(&g, &probe).unwrap(), vec![copy.clone()]);
    assert_eq!(w.claim_dispatch(&copy, &probe).unwrap(), Claim::Won);
    // ... the worker dies here, before publishing the child ...

    // The redelivered parent sees its own claim, and the child is not dispatched.
    assert_eq!(
        w.claim_dispatch(&copy, &probe).unwrap(),
        Claim::HeldBy(probe.clone())
    );
    assert!(!w.is_dispatched(&copy).unwrap());
    assert_eq!(w.claim(&copy).unwrap().unwrap().by, probe);
    // `iom resume` finds it too.
    assert_eq!(w.undispatched_ready().unwrap(), vec![copy.clone()]);
    let st = w.status().unwrap();
    assert!(matches!(
        st.task(&probe).unwrap().state,
        TaskState::Succeeded { attempt: 1, seconds, .. } if (seconds - 2.5).abs() < 1e-9
    ));
    assert_eq!(st.task(&copy).unwrap().state, TaskState::Waiting);

    w.mark_dispatched(&copy).unwrap();
    assert!(w.undispatched_ready().unwrap().is_empty());
    assert_eq!(
        w.status().unwrap().task(&copy).unwrap().state,
        TaskState::Dispatched
    );

    // The status serialises for `iom status --json`.
    let json = serde_json::to_value(w.status().unwrap()).unwrap();
    assert_eq!(json["state"], "running");
    assert_eq!(json["graph_id"], g.id.0.as_str());
    let tasks = json["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 6);
    assert_eq!(tasks[0]["state"], "succeeded");
    assert_eq!(tasks[0]["worker"], "host-a");
    assert_eq!(tasks[1]["state"], "dispatched");
}

#[test]
fn the_graph_succeeds_when_every_task_has() {
    let tmp = tempfile::tempdir().unwrap();
    let g = pipeline(tmp.path());
    let w = WorkDir::create(&g).unwrap();
    for n in &g.nodes {
        w.complete(&record(&n.id, 1, "h")).unwrap();
    }
    let st = w.status().unwrap();
    assert_eq!(st.state, GraphState::Succeeded);
    assert!(w.undispatched_ready().unwrap().is_empty());
    let cleanup = tid(&g, StepKind::Cleanup);
    assert!(w.ready_children(&g, &cleanup).unwrap().is_empty());
    assert!(w.ready_children(&g, &TaskId("nope".into())).is_err());
}

/// Records create the folders they need when they find them missing (a work
/// folder from an older iom, or one whose empty folders were cleaned away):
/// folders are no longer created before every write.
#[test]
fn records_recreate_missing_subfolders() {
    let tmp = tempfile::tempdir().unwrap();
    let g = pipeline(tmp.path());
    let w = WorkDir::create(&g).unwrap();
    for sub in ["runs", "done", "failed", "claims", "dispatched", "tmp"] {
        std::fs::remove_dir(tmp.path().join(sub)).unwrap();
    }
    let (probe, copy) = (tid(&g, StepKind::Probe), tid(&g, StepKind::Copy));
    w.mark_dispatched(&probe).unwrap();
    assert!(w.is_dispatched(&probe).unwrap());
    assert_eq!(w.begin_attempt(&probe, 1, "host-a").unwrap(), Begin::Run);
    assert_eq!(w.begin_attempt(&probe, 1, "host-b").unwrap(), Begin::Run);
    assert_eq!(w.latest_run(&probe).unwrap().unwrap().worker, "host-b");
    let rec = record(&probe, 1, "host-b");
    assert_eq!(w.complete(&rec).unwrap(), Completed::Recorded);
    assert_eq!(w.completion(&probe).unwrap(), Some(rec));
    assert_eq!(w.claim_dispatch(&copy, &probe).unwrap(), Claim::Won);
    w.record_failure(&FailureRecord {
        task_id: copy.clone(),
        attempt: 1,
        worker: "host-c".into(),
        at_ms: 1,
        class: ErrorClass::Permanent,
        reason: "bad".into(),
        dead_lettered: true,
    })
    .unwrap();
    assert_eq!(w.failure(&copy).unwrap().unwrap().reason, "bad");
}

#[test]
fn attempt_records_are_flat_and_the_old_layout_is_still_read() {
    let tmp = tempfile::tempdir().unwrap();
    let g = pipeline(tmp.path());
    let w = WorkDir::create(&g).unwrap();
    let runs = tmp.path().join("runs");
    let (probe, copy) = (tid(&g, StepKind::Probe), tid(&g, StepKind::Copy));

    assert_eq!(w.begin_attempt(&probe, 1, "host-a").unwrap(), Begin::Run);
    assert!(runs.join(format!("{}.1.json", probe.0)).is_file());
    assert!(!runs.join(&probe.0).exists(), "no folder per task");
    // What a task whose id extends this one's would write is not this task's.
    std::fs::write(runs.join(format!("{}.5.3.json", probe.0)), b"{}").unwrap();
    std::fs::write(runs.join(format!("{}.x.json", probe.0)), b"{}").unwrap();
    assert_eq!(w.current_attempt(&probe).unwrap(), Some(1));
    assert_eq!(w.begin_attempt(&probe, 2, "host-b").unwrap(), Begin::Run);
    assert_eq!(w.current_attempt(&probe).unwrap(), Some(2));
    assert_eq!(
        w.begin_attempt(&probe, 1, "host-a").unwrap(),
        Begin::Stale { current: 2 }
    );

    // A work folder an earlier build left mid-publish: runs/<task>/<n>.json.
    let old = runs.join(&copy.0);
    std::fs::create_dir_all(&old).unwrap();
    let rec = serde_json::json!({
        "task_id": copy.0, "attempt": 3, "worker": "old-host", "started_at_ms": 5
    });
    std::fs::write(old.join("3.json"), rec.to_string()).unwrap();
    assert_eq!(w.current_attempt(&copy).unwrap(), Some(3));
    assert_eq!(w.latest_run(&copy).unwrap().unwrap().worker, "old-host");
    assert_eq!(
        w.begin_attempt(&copy, 2, "host-c").unwrap(),
        Begin::Stale { current: 3 }
    );
    assert_eq!(w.begin_attempt(&copy, 4, "host-c").unwrap(), Begin::Run);
    assert_eq!(w.latest_run(&copy).unwrap().unwrap().worker, "host-c");
    assert!(runs.join(format!("{}.4.json", copy.0)).is_file());
}

#[test]
fn dispatch_marks_are_names_of_the_manifest() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let g = pipeline(tmp.path());
    let w = WorkDir::create(&g).unwrap();
    let ids: Vec<TaskId> = g.nodes.iter().map(|n| n.id.clone()).collect();
    for id in &ids {
        assert!(!w.is_dispatched(id).unwrap());
        w.mark_dispatched(id).unwrap();
        w.mark_dispatched(id).unwrap(); // idempotent
        assert!(w.is_dispatched(id).unwrap());
    }
    let manifest = tmp.path().join("manifest.json");
    let before = std::fs::read(&manifest).unwrap();
    let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
    for id in &ids {
        let mark = tmp.path().join("dispatched").join(format!("{}.json", id.0));
        assert_eq!(inode(&mark), inode(&manifest), "{id}: not a new file");
    }
    assert_eq!(
        std::fs::metadata(&manifest).unwrap().nlink(),
        ids.len() as u64 + 1
    );
    assert_eq!(std::fs::read(&manifest).unwrap(), before);
    assert_eq!(WorkDir::open(tmp.path()).unwrap().manifest().unwrap(), g);

    // Where no link can be made (here: the manifest is gone from under a
    // worker that had read it) the mark is a small file of its own.
    let tmp = tempfile::tempdir().unwrap();
    let g = pipeline(tmp.path());
    let w = WorkDir::create(&g).unwrap();
    std::fs::remove_file(tmp.path().join("manifest.json")).unwrap();
    let probe = tid(&g, StepKind::Probe);
    w.mark_dispatched(&probe).unwrap();
    assert!(w.is_dispatched(&probe).unwrap());
    let mark = tmp
        .path()
        .join("dispatched")
        .join(format!("{}.json", probe.0));
    assert_eq!(std::fs::metadata(&mark).unwrap().nlink(), 1);
    assert!(std::fs::read_to_string(&mark)
        .unwrap()
        .contains("dispatch mark"));
}

#[test]
fn the_publishes_of_a_project_are_found_by_the_work_folder_template() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let older = root.join("w/SEQA/g1");
    WorkDir::create(&pipeline(&older)).unwrap();
    // Manifest times a minute apart: the newest comes first.
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(older.join("manifest.json"))
        .unwrap()
        .set_modified(past)
        .unwrap();
    let newer = root.join("w/SEQB/g2");
    WorkDir::create(&pipeline(&newer)).unwrap();
    // Not publishes: a folder without a manifest, a file, one level too shallow.
    std::fs::create_dir_all(root.join("w/SEQC/half")).unwrap();
    std::fs::write(root.join("w/SEQC/stray.json"), "{}").unwrap();
    WorkDir::create(&pipeline(&root.join("w/shallow"))).unwrap();

    let found = iom::store::list_work_dirs(root, "w/{seq}/{graph}").unwrap();
    let paths: Vec<&Path> = found.iter().map(|(w, _)| w.path()).collect();
    assert_eq!(paths, vec![newer.as_path(), older.as_path()]);
    // A project that has published nothing yet.
    assert!(iom::store::list_work_dirs(root, ".iom/publishes/{graph}")
        .unwrap()
        .is_empty());
}

/// The in-process lock: one holder at a time; while it is held the graph runs,
/// once it is free an unfinished graph is `Interrupted`, and what the stopped run
/// had queued or started is what the next run sends again. Handing the graph to
/// a broker removes the lock file, and it runs again as far as status goes.
#[test]
fn a_graph_whose_in_process_run_stopped_is_interrupted_until_it_is_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let g = pipeline(tmp.path());
    let w = WorkDir::create(&g).unwrap();
    let (probe, copy) = (tid(&g, StepKind::Probe), tid(&g, StepKind::Copy));
    // Never run in-process: an unfinished graph is just running.
    assert_eq!(w.status().unwrap().state, GraphState::Running);
    assert!(!w.in_process_run_stopped().unwrap());

    let held = w.lock_in_process().expect("free");
    let other = WorkDir::open(w.path()).unwrap();
    assert!(
        matches!(
            other.lock_in_process(),
            Err(StoreError::RunningInProcess { .. })
        ),
        "one holder"
    );
    assert!(
        matches!(
            other.forget_in_process(),
            Err(StoreError::RunningInProcess { .. })
        ),
        "not while held"
    );
    w.complete(&record(&probe, 1, "h")).unwrap();
    w.mark_dispatched(&copy).unwrap();
    assert_eq!(other.status().unwrap().state, GraphState::Running);
    assert_eq!(
        w.orphaned_in_process().unwrap(),
        vec![(copy.clone(), None)],
        "queued, not started"
    );
    assert!(matches!(
        w.begin_attempt(&copy, 2, "h").unwrap(),
        Begin::Run
    ));
    assert_eq!(
        w.orphaned_in_process().unwrap(),
        vec![(copy.clone(), Some(2))]
    );
    drop(held);

    // The run is gone (its lock with it): interrupted.
    assert!(other.in_process_run_stopped().unwrap());
    assert_eq!(other.status().unwrap().state, GraphState::Interrupted);
    // A resume takes the lock again: running.
    let again = other.lock_in_process().expect("free again");
    assert_eq!(w.status().unwrap().state, GraphState::Running);
    drop(again);
    // A finished graph is never interrupted.
    for n in &g.nodes {
        w.complete(&record(&n.id, 2, "h")).unwrap();
    }
    assert_eq!(w.status().unwrap().state, GraphState::Succeeded);

    // Handed to a broker: the hand-off says an in-process run had it (its
    // leftovers are to be sent), and the lock file goes once they are.
    let g2 = graph_of(&tmp.path().join("other"), &[(StepKind::Probe, &[])]);
    let w2 = WorkDir::create(&g2).unwrap();
    drop(w2.lock_in_process().unwrap());
    assert_eq!(w2.status().unwrap().state, GraphState::Interrupted);
    assert!(w2.hand_to_farm("farmhost/7").unwrap(), "ran in-process");
    assert_eq!(w2.farm_handoff().unwrap().unwrap().by, "farmhost/7");
    w2.forget_in_process().unwrap();
    assert!(!w2.in_process_lock_path().exists());
    assert_eq!(w2.status().unwrap().state, GraphState::Running);
    // An in-process run now refuses it, naming who submitted it; only when
    // told to (`--embedded`) does it take it back.
    match w2.claim_from_farm(false) {
        Err(e @ StoreError::OnTheFarm { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains(&g2.id.0) && m.contains("farmhost/7") && m.contains("--embedded"),
                "{m}"
            );
            assert_eq!(e.class(), ErrorClass::Permanent);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        w2.farm_handoff().unwrap().is_some(),
        "a refusal changes nothing"
    );
    w2.claim_from_farm(true).unwrap();
    assert_eq!(w2.farm_handoff().unwrap(), None);
    w2.claim_from_farm(false).unwrap();

    // Never run in-process: nothing to send, no lock file left behind.
    let g3 = graph_of(&tmp.path().join("third"), &[(StepKind::Probe, &[])]);
    let w3 = WorkDir::create(&g3).unwrap();
    assert!(!w3.hand_to_farm("farmhost/8").unwrap());
    assert!(!w3.in_process_lock_path().exists());
    assert_eq!(w3.status().unwrap().state, GraphState::Running);
    // The first hand-off is the one kept.
    assert!(!w3.hand_to_farm("farmhost/9").unwrap());
    assert_eq!(w3.farm_handoff().unwrap().unwrap().by, "farmhost/8");
}
