//! A build without cluster mode: the cluster's event plane, which no host
//! of this build has (see `cluster/off.rs`).

use bytes::Bytes;

use super::job::{JobRecord, JobTask};
use super::plane::{EventError, EventInfo, EventsCtx, Published};
use super::schedule::Schedule;
use super::{DeliveryRecord, EventRecord, Subscription};
use crate::cluster::Cluster;
use crate::cluster::off::Never;
use crate::config::HostConfig;

/// The cluster's event plane: none in this build.
#[derive(Clone)]
pub(crate) struct SharedEvents {
    pub(crate) never: Never,
}

// Never called: every method is on a type no value of which exists.
#[allow(unused_variables)]
impl SharedEvents {
    pub(crate) async fn open(
        cluster: &Cluster,
        config: &HostConfig,
    ) -> anyhow::Result<SharedEvents> {
        match cluster.never {}
    }

    pub(super) fn job(&self, id: u64) -> Option<JobRecord> {
        match self.never {}
    }

    pub(super) fn jobs(&self) -> Vec<JobRecord> {
        match self.never {}
    }

    pub(super) async fn start_job(
        &self,
        job: &JobRecord,
        indices: &[u32],
    ) -> Result<(), EventError> {
        match self.never {}
    }

    pub(super) async fn cancel_job(&self, job: JobRecord) -> Result<JobRecord, EventError> {
        match self.never {}
    }

    pub(super) async fn job_tasks(&self, job: &JobRecord) -> Result<Vec<JobTask>, EventError> {
        match self.never {}
    }

    pub(super) fn subscriptions(&self, topic: Option<&str>) -> Vec<Subscription> {
        match self.never {}
    }

    pub(super) fn schedules(&self) -> Vec<Schedule> {
        match self.never {}
    }

    pub(super) async fn put_subscription(&self, sub: &Subscription) -> Result<(), EventError> {
        match self.never {}
    }

    pub(super) async fn delete_subscription(
        &self,
        function: &str,
        topic: &str,
    ) -> Result<bool, EventError> {
        match self.never {}
    }

    pub(super) async fn put_schedule(&self, schedule: &Schedule) -> Result<(), EventError> {
        match self.never {}
    }

    pub(super) async fn delete_schedule(&self, id: u64) -> Result<bool, EventError> {
        match self.never {}
    }

    pub(crate) async fn forget_function(&self, function: &str) -> Result<(), EventError> {
        match self.never {}
    }

    pub(super) async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        content_type: Option<String>,
    ) -> Result<Published, EventError> {
        match self.never {}
    }

    pub(super) async fn send_to_function(
        &self,
        function: &str,
        event: EventRecord,
        payload: Bytes,
        message_id: Option<String>,
    ) -> Result<Published, EventError> {
        match self.never {}
    }

    pub(super) async fn event(&self, id: &str, seq: u64) -> Result<EventInfo, EventError> {
        match self.never {}
    }

    pub(super) async fn dead_letters(
        &self,
        function: &str,
        topic: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, EventError> {
        match self.never {}
    }

    pub(super) async fn redrive(
        &self,
        function: &str,
        topic: Option<&str>,
        ids: Option<Vec<u64>>,
    ) -> Result<Vec<DeliveryRecord>, EventError> {
        match self.never {}
    }

    pub(super) async fn purge_dead(
        &self,
        function: &str,
        topic: Option<&str>,
    ) -> Result<u64, EventError> {
        match self.never {}
    }

    pub(super) fn start(&self, host: &EventsCtx) {
        match self.never {}
    }

    pub(super) fn stop(&self) {
        match self.never {}
    }
}
