//! A build without cluster mode: a host is never a cluster's replica (see
//! `cluster/off.rs`).

use super::FunctionsCtx;
use crate::cluster::Cluster;
use crate::error::DeployError;
use crate::function::records::FunctionRecord;

impl FunctionsCtx {
    /// The cluster: never one in this build.
    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        self.inner.cluster.as_ref()
    }

    /// Cluster mode only: never called in this build.
    pub(crate) async fn sync_to(
        &self,
        _name: &str,
        _remote: Option<&FunctionRecord>,
    ) -> Result<(), DeployError> {
        Ok(())
    }

    /// Cluster mode only: nothing to join in this build.
    pub(crate) async fn join_cluster(&self) -> anyhow::Result<()> {
        Ok(())
    }
}
