//! The event plane: publishing, asynchronous invocations, subscriptions,
//! events and their dead deliveries, schedules and batch jobs.

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use wisp_host::{
    DeliveryRecord, EventInfo, JobInfo, NewJob, NewSchedule, NewSubscription, Published, Purged,
    RedriveRequest, Redriven, Schedule, Subscription,
};

use crate::{Client, Error};

impl Client {
    /// `POST /v1/topics/{topic}/events`: publishes an event; answered once
    /// it is durable.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        content_type: Option<&str>,
    ) -> Result<Published, Error> {
        let mut request = self
            .request(Method::POST, &["v1", "topics", topic, "events"])
            .body(payload.into());
        if let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        self.call(request).await
    }

    /// `POST /v1/functions/{name}/invoke-async?path=...`: queues an
    /// invocation (an event for the function's event handler, or a `POST`
    /// to `path`), retried on failure; answered once it is durable.
    pub async fn invoke_async(
        &self,
        name: &str,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<Bytes>,
    ) -> Result<Published, Error> {
        let mut request = self
            .request(Method::POST, &["v1", "functions", name, "invoke-async"])
            .query(&[("path", path)]);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        self.call(request).await
    }

    /// `POST /v1/subscriptions`.
    pub async fn subscribe(&self, subscription: &NewSubscription) -> Result<Subscription, Error> {
        let request = self
            .request(Method::POST, &["v1", "subscriptions"])
            .json(subscription);
        self.call(request).await
    }

    /// `DELETE /v1/subscriptions/{function}/{topic}`.
    pub async fn unsubscribe(&self, function: &str, topic: &str) -> Result<(), Error> {
        let segments = ["v1", "subscriptions", function, topic];
        self.call_empty(self.request(Method::DELETE, &segments))
            .await
    }

    /// `GET /v1/subscriptions`: every subscription, or one function's.
    pub async fn subscriptions(&self, function: Option<&str>) -> Result<Vec<Subscription>, Error> {
        let mut request = self.request(Method::GET, &["v1", "subscriptions"]);
        if let Some(function) = function {
            request = request.query(&[("function", function)]);
        }
        self.call(request).await
    }

    /// `GET /v1/events/{id}`: an event and, per subscription, its delivery.
    pub async fn event(&self, id: &str) -> Result<EventInfo, Error> {
        self.call(self.request(Method::GET, &["v1", "events", id]))
            .await
    }

    /// `GET /v1/functions/{name}/dlq`: at most `limit` dead deliveries of a
    /// function (of one topic, if given).
    pub async fn dead_letters(
        &self,
        name: &str,
        topic: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, Error> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(topic) = topic {
            query.push(("topic", topic.to_string()));
        }
        let request = self
            .request(Method::GET, &["v1", "functions", name, "dlq"])
            .query(&query);
        self.call(request).await
    }

    /// `DELETE /v1/functions/{name}/dlq`: removes a function's dead
    /// deliveries (of one topic, if given).
    pub async fn purge_dead_letters(
        &self,
        name: &str,
        topic: Option<&str>,
    ) -> Result<Purged, Error> {
        let mut request = self.request(Method::DELETE, &["v1", "functions", name, "dlq"]);
        if let Some(topic) = topic {
            request = request.query(&[("topic", topic)]);
        }
        self.call(request).await
    }

    /// `POST /v1/functions/{name}/dlq/redrive`: retries dead deliveries now.
    pub async fn redrive(&self, name: &str, which: &RedriveRequest) -> Result<Redriven, Error> {
        let request = self
            .request(Method::POST, &["v1", "functions", name, "dlq", "redrive"])
            .json(which);
        self.call(request).await
    }

    /// `POST /v1/schedules`.
    pub async fn schedule(&self, schedule: &NewSchedule) -> Result<Schedule, Error> {
        let request = self
            .request(Method::POST, &["v1", "schedules"])
            .json(schedule);
        self.call(request).await
    }

    /// `GET /v1/schedules`: every schedule, or one function's.
    pub async fn schedules(&self, function: Option<&str>) -> Result<Vec<Schedule>, Error> {
        let mut request = self.request(Method::GET, &["v1", "schedules"]);
        if let Some(function) = function {
            request = request.query(&[("function", function)]);
        }
        self.call(request).await
    }

    /// `DELETE /v1/schedules/{id}`.
    pub async fn delete_schedule(&self, id: &str) -> Result<(), Error> {
        self.call_empty(self.request(Method::DELETE, &["v1", "schedules", id]))
            .await
    }

    /// `POST /v1/functions/{name}/jobs`: starts a batch job.
    pub async fn run_job(&self, name: &str, job: &NewJob) -> Result<JobInfo, Error> {
        let request = self
            .request(Method::POST, &["v1", "functions", name, "jobs"])
            .json(job);
        self.call(request).await
    }

    /// `GET /v1/jobs/{id}`: a job and each index's state.
    pub async fn job(&self, id: &str) -> Result<JobInfo, Error> {
        self.call(self.request(Method::GET, &["v1", "jobs", id]))
            .await
    }

    /// `GET /v1/jobs`: every job, or one function's.
    pub async fn jobs(&self, function: Option<&str>) -> Result<Vec<JobInfo>, Error> {
        let mut request = self.request(Method::GET, &["v1", "jobs"]);
        if let Some(function) = function {
            request = request.query(&[("function", function)]);
        }
        self.call(request).await
    }

    /// `POST /v1/jobs/{id}/cancel`.
    pub async fn cancel_job(&self, id: &str) -> Result<JobInfo, Error> {
        self.call(self.request(Method::POST, &["v1", "jobs", id, "cancel"]))
            .await
    }
}
