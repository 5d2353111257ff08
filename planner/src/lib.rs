//! Inventory model and wave planner.
//!
//! Layout (to be filled by the planner work):
//! - `inventory`: the model (datacenters, clusters, filers, SQL servers, sites, databases),
//!   streamed loading from JSONL/CSV and validation with file/line/field errors.
//! - `groups`: move groups (union-find over shared databases and logins).
//! - `waves`: the wave planner under capacity, bandwidth, window and draining constraints.
//! - `plan`: the versioned plan file, explain and diff.
//! - `generate`: the seeded synthetic inventory generator.
