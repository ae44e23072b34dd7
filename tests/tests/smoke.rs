mod common;

use common::*;
use saga_runtime::prelude::*;

#[tokio::test(start_paused = true)]
async fn happy_path_runs_every_step_once_in_order() {
    let harness = Harness::default();
    let (runtime, incidents, _) = runtime(&harness, exact_backoff());
    let outcome = runtime.run(ReleasePr::new()).await.unwrap();
    assert_eq!(harness.log(), strings(&["open_pr#1", "run_tests#1", "comment#1", "merge#1", "announce#1"]));
    let output = outcome.output().unwrap();
    assert_eq!(output.announce, "released sha-of-42");
    assert!(outcome.report().escalations.is_empty());
    assert!(incidents.all().is_empty());
}
