//! Inventory model and wave planner for moving a shared-hosting platform between datacenters.
//!
//! Layout (one file per pipeline stage):
//! - [`model`]: the public inventory records (datacenters, web clusters, filers, SQL servers,
//!   databases, sites) as serde types: the stable contract with exports, the lab and migrator.
//! - [`window`]: daily maintenance windows with UTC offsets or IANA zones;
//!   [`calendar`]: the same on dated nights, across daylight-saving changes.
//! - `reader`, [`load`], `load_sites`: streamed, parallel loading of JSONL (and CSV for sites)
//!   into the compact [`inventory::Inventory`], with validation naming file, line and field.
//! - [`write_inventory`], [`generate`]: writing inventories, and the seeded realistic generator.
//! - [`groups`]: move groups by union-find over shared databases and logins.
//! - [`settings`]: every planner knob, TOML file, defaults, validation.
//! - [`destination`]: bin packing of groups onto destination clusters and SQL servers.
//! - [`waves`]: the wave planner (canary ramp, caps, byte budget, windows, draining, pins);
//!   `waves/outcome.rs` the types of what it decides.
//! - [`plan`], `write_plan`: the versioned plan file (types, writer, reader).
//! - [`explain`]: `plan explain <site>` and `plan diff A B`.
//! - [`pipeline`]: load → group → waves → write, timed.

pub mod calendar;
pub mod destination;
pub mod error;
pub mod explain;
pub mod generate;
pub mod groups;
pub mod inventory;
pub mod load;
mod load_sites;
pub mod model;
pub mod pipeline;
pub mod plan;
mod reader;
pub mod settings;
pub mod waves;
pub mod window;
pub mod write_inventory;
mod write_plan;

pub use error::{InventoryError, PlanError, RowError, SettingsError};
pub use inventory::Inventory;
pub use load::{load, LoadOptions};
pub use model::{Database, Datacenter, DcRole, Filer, Pin, Site, SqlServer, WebCluster};
pub use pipeline::{plan_dir, plan_loaded, PlanRunError, Planned};
pub use plan::{Plan, PLAN_FORMAT, PLAN_VERSION};
pub use settings::Settings;
pub use write_plan::PlanOverview;
