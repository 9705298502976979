//! A build without cluster mode (wisp-host's `cluster` feature off: the
//! runtime-only edge build). [`Cluster::connect`] refuses, so no host ever
//! has a cluster; the types the single-node code names for cluster mode
//! are here, with nothing in them, and their methods are never reached.

use std::time::Duration;

use bytes::Bytes;

use super::{ClusterConfig, ClusterError, Member, SharedConfig};
use crate::capabilities::kv::KvError;
use crate::capabilities::kv::store::{KvEntry, KvWrite};
use crate::capabilities::logs::LogEntry;
use crate::capabilities::settings::ConfigItem;
use crate::function::records::FunctionRecord;

/// Nothing: no value of the cluster's types exists in this build.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Never {}

/// A host's connection to the cluster: none in this build.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub(crate) never: Never,
}

impl Cluster {
    /// Refuses: this build has no cluster mode.
    pub async fn connect(config: &ClusterConfig) -> anyhow::Result<Cluster> {
        let _ = config;
        anyhow::bail!(
            "this build of Wisp has no cluster mode (built without its `cluster` feature, as \
             the runtime-only edge build is): use a build with it (`--features runtime,cluster`)"
        )
    }
}

/// Functions' key-value data in the cluster: none in this build.
#[derive(Clone)]
pub(crate) struct SharedKv {
    pub(crate) never: Never,
}

/// Functions' log lines in the cluster: none in this build.
#[derive(Clone)]
pub(crate) struct SharedLogs {
    pub(crate) never: Never,
}

// Never called: every method is on a type no value of which exists (they
// are documented on the cluster build's).
#[allow(unused_variables, missing_docs)]
impl Cluster {
    pub async fn leave(&self) {
        match self.never {}
    }

    pub(crate) async fn open_logs(
        &self,
        max_lines: u64,
        max_age: Duration,
    ) -> anyhow::Result<SharedLogs> {
        match self.never {}
    }

    pub(crate) fn logs(&self) -> Option<&SharedLogs> {
        match self.never {}
    }

    pub(crate) fn kv(&self) -> SharedKv {
        match self.never {}
    }

    pub fn node(&self) -> &str {
        match self.never {}
    }

    pub fn connected(&self) -> bool {
        match self.never {}
    }

    pub fn members_seen(&self) -> usize {
        match self.never {}
    }

    pub async fn hosts(&self) -> Result<Vec<Member>, ClusterError> {
        match self.never {}
    }

    pub(crate) async fn start_heartbeat(&self, data_url: String, admin_url: String) {
        match self.never {}
    }

    pub(crate) async fn function(
        &self,
        name: &str,
    ) -> Result<Option<(FunctionRecord, u64)>, ClusterError> {
        match self.never {}
    }

    pub(crate) async fn put_function(
        &self,
        record: &FunctionRecord,
        revision: Option<u64>,
    ) -> Result<u64, ClusterError> {
        match self.never {}
    }

    pub(crate) async fn delete_function(
        &self,
        name: &str,
        revision: u64,
    ) -> Result<(), ClusterError> {
        match self.never {}
    }

    pub(crate) async fn config(&self, function: &str) -> Result<SharedConfig, ClusterError> {
        match self.never {}
    }

    pub(crate) async fn put_config(
        &self,
        function: &str,
        items: &[ConfigItem],
        revision: Option<u64>,
    ) -> Result<(), ClusterError> {
        match self.never {}
    }

    pub(crate) async fn delete_config(&self, function: &str) -> Result<(), ClusterError> {
        match self.never {}
    }

    pub(crate) async fn put_artifact(
        &self,
        sha256: &str,
        wasm: &Bytes,
    ) -> Result<(), ClusterError> {
        match self.never {}
    }
}

#[allow(unused_variables)]
impl SharedKv {
    pub(crate) async fn get(&self, function: &str, key: &str) -> Result<Option<KvEntry>, KvError> {
        match self.never {}
    }

    pub(crate) async fn update<T>(
        &self,
        function: &str,
        key: &str,
        decide: impl Fn(Option<KvEntry>, u64) -> Result<(KvWrite, u64, T), KvError>,
    ) -> Result<(T, bool), KvError> {
        match self.never {}
    }

    pub(crate) async fn keys(&self, function: &str) -> Result<Vec<(String, Option<u64>)>, KvError> {
        match self.never {}
    }

    pub(crate) async fn purge(&self, function: &str) -> Result<(), KvError> {
        match self.never {}
    }
}

#[allow(unused_variables)]
impl SharedLogs {
    pub(crate) fn connected(&self) -> bool {
        match self.never {}
    }

    pub(crate) async fn publish(&self, function: &str, entries: &[LogEntry]) -> anyhow::Result<()> {
        match self.never {}
    }

    pub(crate) async fn read(
        &self,
        function: &str,
        after: Option<u64>,
        since_ms: Option<u64>,
        invocation: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<LogEntry>> {
        match self.never {}
    }

    pub(crate) async fn purge(&self, function: &str) -> anyhow::Result<()> {
        match self.never {}
    }
}
