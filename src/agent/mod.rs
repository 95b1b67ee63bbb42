//! `hup agent`: a hawkBit DDI client on the running OS (docs/fleet.md). It polls a fleet
//! server (hawkBit, goosebit), stages the `.hup` artifact of a deployment through
//! [`crate::stage`], and reports the result only once it is known: success after the new
//! OS committed itself (`hup mark-good`), failure with the reason after a rollback or a
//! refusal. The action it works on is kept in state.json (`crate::model::agent`).
//!
//! The pieces: [`config`] (agent.json), [`client`] (HTTP), [`ddi`] (the documents),
//! [`context`] (what a cycle shares), [`record`] (state.json), [`outcome`] (what became
//! of a staged action), [`report`] (feedback), [`deploy`] (a deployment), [`cycle`] (one
//! poll cycle), [`run`] (the loop).

pub mod client;
pub mod config;
pub mod context;
pub mod cycle;
pub mod ddi;
pub mod deploy;
pub mod outcome;
pub mod record;
pub mod report;
pub mod run;

pub use config::AgentConfig;
pub use context::Agent;
