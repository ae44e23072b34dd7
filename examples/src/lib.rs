//! The code-change agent of the main job and the fakes it runs against, as a library: the
//! binary (`src/main.rs`) runs the scenarios, and the tests (`tests/matrix.rs`) run the agent
//! through the fault matrix.

pub mod agent;
pub mod fakes;
