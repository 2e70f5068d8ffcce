//! Git and OCI, both ways, for the older Margo draft where the Application Registry was a
//! Git repository: [`source`] serves Git application registries as OCI packages (Git-backed
//! upstreams); [`serve`] offers the OCI packages of `app` routes to `git clone`.

pub mod serve;
pub mod source;
