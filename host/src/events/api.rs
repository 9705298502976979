//! [`Events`] and [`Jobs`]: the event plane as the admin API and embedders
//! reach it ([`Host::events`], [`Host::jobs`]). Errors are
//! [`EventError`]s.

use std::time::Duration;

use bytes::Bytes;

use super::job::{JobInfo, NewJob};
use super::plane::EventsCtx;
use super::plane::{
    EventError, EventInfo, NewSchedule, NewSubscription, Published, Purged, RedriveRequest,
    Redriven,
};
use super::schedule::Schedule;
use super::{DeliveryRecord, Subscription};

/// Topics, subscriptions, asynchronous invocations, dead letters and
/// schedules ([`Host::events`](crate::Host::events)).
pub struct Events<'a> {
    pub(crate) host: &'a EventsCtx,
}

impl Events<'_> {
    /// Publishes `payload` on `topic`: one delivery per current subscriber.
    /// Returns once the event is durable.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        content_type: Option<String>,
    ) -> Result<Published, EventError> {
        self.host.publish(topic, payload, content_type).await
    }

    /// Queues an invocation of `function` (`POST` to `path` with these
    /// headers and body), delivered like an event, with retries. Returns
    /// once it is durable.
    pub async fn invoke_async(
        &self,
        function: &str,
        path: String,
        headers: Vec<(String, String)>,
        payload: Bytes,
    ) -> Result<Published, EventError> {
        self.host
            .invoke_async(function, path, headers, payload)
            .await
    }

    /// Subscribes a function to a topic (or changes its subscription).
    pub async fn subscribe(&self, new: NewSubscription) -> Result<Subscription, EventError> {
        self.host.subscribe(new).await
    }

    /// Removes a subscription; its pending deliveries are cancelled.
    pub async fn unsubscribe(&self, function: &str, topic: &str) -> Result<(), EventError> {
        self.host.unsubscribe(function, topic).await
    }

    /// Subscriptions (of one function if given), by topic.
    pub fn subscriptions(&self, function: Option<&str>) -> Result<Vec<Subscription>, EventError> {
        self.host.subscriptions(function)
    }

    /// An event and the state of each of its deliveries.
    pub async fn event(&self, id: &str) -> Result<EventInfo, EventError> {
        self.host.event(id).await
    }

    /// The dead-letter list of a function's subscriptions (of one topic if
    /// given), oldest first, at most `limit`.
    pub async fn dead_letters(
        &self,
        function: &str,
        topic: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, EventError> {
        self.host.dead_letters(function, topic, limit).await
    }

    /// Retries dead deliveries of a function now, attempts reset.
    pub async fn redrive(
        &self,
        function: &str,
        req: RedriveRequest,
    ) -> Result<Redriven, EventError> {
        self.host.redrive(function, req).await
    }

    /// Removes a function's dead letters (of one topic if given).
    pub async fn purge_dead_letters(
        &self,
        function: &str,
        topic: Option<&str>,
    ) -> Result<Purged, EventError> {
        self.host.purge_dead_letters(function, topic).await
    }

    /// Adds a schedule: each tick of its cron expression enqueues one
    /// event for the function.
    pub async fn add_schedule(&self, new: NewSchedule) -> Result<Schedule, EventError> {
        self.host.add_schedule(new).await
    }

    /// Schedules (of one function if given), oldest first.
    pub fn schedules(&self, function: Option<&str>) -> Result<Vec<Schedule>, EventError> {
        self.host.schedules(function)
    }

    /// Deletes a schedule.
    pub async fn delete_schedule(&self, id: &str) -> Result<(), EventError> {
        self.host.delete_schedule(id).await
    }

    /// Starts delivering (once; [`Host::serve`](crate::Host::serve) does it): for embedders
    /// that serve requests themselves. Needs a tokio runtime.
    pub fn start(&self) -> anyhow::Result<()> {
        self.host.start_events()
    }

    /// Stops delivering: no new deliveries start; running ones get up to
    /// `grace` to finish, the others are retried after the next start.
    pub async fn stop(&self, grace: Duration) {
        self.host.stop_events(grace).await
    }
}

/// Batch jobs: one event per index of an array ([`Host::jobs`](crate::Host::jobs)).
pub struct Jobs<'a> {
    pub(crate) host: &'a EventsCtx,
}

impl Jobs<'_> {
    /// Starts a job of `function`; durable when this returns.
    pub async fn start(&self, function: &str, new: NewJob) -> Result<JobInfo, EventError> {
        self.host.start_job(function, new).await
    }

    /// A job and the state of each index.
    pub async fn get(&self, id: &str) -> Result<JobInfo, EventError> {
        self.host.job(id).await
    }

    /// Jobs (of one function if given), oldest first, without per-index
    /// states.
    pub async fn list(&self, function: Option<&str>) -> Result<Vec<JobInfo>, EventError> {
        self.host.list_jobs(function).await
    }

    /// Cancels a job: its pending indices are not run; running ones
    /// finish.
    pub async fn cancel(&self, id: &str) -> Result<JobInfo, EventError> {
        self.host.cancel_job(id).await
    }
}
