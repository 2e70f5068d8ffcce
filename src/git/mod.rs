//! Git for WOS that speak the older Margo draft, where the Application Registry was a
//! Git repository: [`serve`] offers the OCI packages of the `app` routes to `git clone`.

pub mod serve;
