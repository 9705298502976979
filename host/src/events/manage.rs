//! What the control plane manages on the event plane: subscriptions,
//! events and their deliveries, dead letters (redrive, purge), schedules,
//! and the removal of a deleted function's events. Every write runs on the
//! store's writer and is answered once flushed.

use super::plane::EventsCtx;
use super::plane::{
    EventError, EventInfo, NewSchedule, NewSubscription, Purged, RedriveRequest, Redriven, now_ms,
};
use super::schedule::Schedule;
use super::{
    DeliveryRecord, RetryPolicy, Subscription, format_id, parse_id, validate_content_type,
    validate_topic,
};
use crate::store::Durability;

impl EventsCtx {
    /// Subscribes a function to a topic (or changes its subscription).
    pub(crate) async fn subscribe(&self, new: NewSubscription) -> Result<Subscription, EventError> {
        validate_topic(&new.topic).map_err(EventError::InvalidName)?;
        let config = &self.inner.config;
        let path = new.path.unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.parse::<axum::http::Uri>().is_err() {
            return Err(EventError::InvalidArgument(format!(
                "path {path:?} is not an absolute path (with an optional query)"
            )));
        }
        let concurrency = new.concurrency.unwrap_or(config.event_concurrency);
        if concurrency == 0 || concurrency > 1000 {
            return Err(EventError::InvalidArgument(format!(
                "concurrency must be between 1 and 1000 (got {concurrency})"
            )));
        }
        let d = config.event_retry;
        let retry = RetryPolicy {
            max_attempts: new.max_attempts.unwrap_or(d.max_attempts),
            base_delay_ms: new.retry_base_ms.unwrap_or(d.base_delay_ms),
            max_delay_ms: d.max_delay_ms.max(new.retry_base_ms.unwrap_or(0)),
            max_age_ms: new.max_age_ms.unwrap_or(d.max_age_ms),
        };
        retry.validate().map_err(EventError::InvalidArgument)?;
        let _guard = self.inner.admin_lock.lock().await;
        if self.inner.records.get(&new.function)?.is_none() {
            return Err(EventError::FunctionNotFound(new.function));
        }
        let store = self.event_store();
        let earlier = match self.shared() {
            Some(shared) => shared
                .subscriptions(Some(&new.topic))
                .into_iter()
                .find(|s| s.function == new.function),
            None => store.subscription(&new.topic, &new.function)?,
        };
        let created_at_ms = earlier.map(|s| s.created_at_ms).unwrap_or_else(now_ms);
        let sub = Subscription {
            topic: new.topic,
            function: new.function,
            path,
            concurrency,
            retry,
            created_at_ms,
        };
        match self.shared() {
            Some(shared) => shared.put_subscription(&sub).await?,
            None => {
                store
                    .put_subscription(sub.clone(), Durability::Flushed)
                    .await?
            }
        }
        tracing::info!(function = %sub.function, topic = %sub.topic, "subscribed");
        Ok(sub)
    }

    /// Removes a subscription; its pending deliveries are cancelled.
    pub(crate) async fn unsubscribe(&self, function: &str, topic: &str) -> Result<(), EventError> {
        let _guard = self.inner.admin_lock.lock().await;
        let deleted = match self.shared() {
            Some(shared) => shared.delete_subscription(function, topic).await?,
            None => {
                self.event_store()
                    .delete_subscription(topic, function, Durability::Flushed)
                    .await?
            }
        };
        if !deleted {
            return Err(EventError::SubscriptionNotFound {
                function: function.to_string(),
                topic: topic.to_string(),
            });
        }
        tracing::info!(function, topic, "unsubscribed");
        Ok(())
    }

    /// Subscriptions (of one function if given), by topic.
    pub(crate) fn subscriptions(
        &self,
        function: Option<&str>,
    ) -> Result<Vec<Subscription>, EventError> {
        let mut subs = match self.shared() {
            Some(shared) => shared.subscriptions(None),
            None => self.event_store().subscriptions(None)?,
        };
        subs.retain(|s| function.is_none_or(|f| s.function == f));
        Ok(subs)
    }

    /// An event and the state of each of its deliveries.
    pub(crate) async fn event(&self, id: &str) -> Result<EventInfo, EventError> {
        let not_found = || EventError::EventNotFound(id.to_string());
        let n = parse_id(id).ok_or_else(not_found)?;
        if let Some(shared) = self.shared() {
            return shared.event(id, n).await;
        }
        let store = self.event_store();
        let (event, _) = store.event(n)?.ok_or_else(not_found)?;
        Ok(EventInfo {
            id: format_id(event.id),
            topic: event.topic,
            time_ms: event.time_ms,
            content_type: event.content_type,
            size_bytes: event.size_bytes,
            deliveries: store.deliveries_of(n)?,
        })
    }

    /// The dead-letter list of a function's subscriptions (of one topic if
    /// given), oldest first, at most `limit`.
    pub(crate) async fn dead_letters(
        &self,
        function: &str,
        topic: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, EventError> {
        if self.inner.records.get(function)?.is_none() {
            return Err(EventError::FunctionNotFound(function.to_string()));
        }
        if let Some(shared) = self.shared() {
            return shared.dead_letters(function, topic, limit).await;
        }
        Ok(self.event_store().dead_deliveries(function, topic, limit)?)
    }

    /// Retries dead deliveries of a function now, attempts reset.
    pub(crate) async fn redrive(
        &self,
        function: &str,
        req: RedriveRequest,
    ) -> Result<Redriven, EventError> {
        if self.inner.records.get(function)?.is_none() {
            return Err(EventError::FunctionNotFound(function.to_string()));
        }
        let ids = req
            .ids
            .iter()
            .map(|s| {
                parse_id(s)
                    .ok_or_else(|| EventError::InvalidArgument(format!("{s:?} is not an event id")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ids = (!ids.is_empty()).then_some(ids);
        if let Some(shared) = self.shared() {
            let redriven = shared.redrive(function, req.topic.as_deref(), ids).await?;
            return Ok(Redriven { redriven });
        }
        // Read on the blocking pool, written on the store's writer;
        // answered once flushed.
        let redriven = self
            .event_store()
            .redrive(function, req.topic.as_deref(), ids, now_ms())
            .await?;
        self.plane().wake.notify_one();
        Ok(Redriven { redriven })
    }

    /// Removes a function's dead letters (of one topic if given): they can
    /// no longer be redriven, and their events go at the next sweep.
    pub(crate) async fn purge_dead_letters(
        &self,
        function: &str,
        topic: Option<&str>,
    ) -> Result<Purged, EventError> {
        if self.inner.records.get(function)?.is_none() {
            return Err(EventError::FunctionNotFound(function.to_string()));
        }
        if let Some(shared) = self.shared() {
            let purged = shared.purge_dead(function, topic).await?;
            tracing::info!(function, topic, purged, "dead letters purged");
            return Ok(Purged { purged });
        }
        // Read on the blocking pool (a long list is many transactions),
        // written on the store's writer; answered once flushed.
        let purged = self
            .event_store()
            .purge_dead(function, topic, now_ms())
            .await?;
        tracing::info!(function, topic, purged, "dead letters purged");
        Ok(Purged { purged })
    }

    /// Removes what the event plane keeps for `function`: subscriptions,
    /// schedules, pending and running deliveries (cancelled), dead letters;
    /// its running jobs end `cancelled` (their records stay for the
    /// retention, as history). Called when it is deleted (after its record)
    /// and before a name is deployed anew (leftovers of a delete a crash
    /// interrupted). The caller holds the admin lock. Flushed.
    pub(crate) async fn purge_function_events(&self, function: &str) -> Result<(), EventError> {
        // Jobs first: a job is marked cancelled only while it still has
        // pending indices (after the purge below it would read `failed`).
        self.cancel_jobs_of_locked(function).await?;
        let retention = self.inner.config.event_retention.as_millis() as u64;
        let p = self
            .event_store()
            .purge_function_events(function, now_ms(), retention)
            .await?;
        if p != Default::default() {
            tracing::info!(
                function,
                subscriptions = p.subscriptions,
                schedules = p.schedules,
                cancelled = p.cancelled,
                dead_letters = p.dead_letters,
                "the function's events were removed"
            );
        }
        Ok(())
    }

    /// Adds a schedule: each tick of `cron` enqueues one event for the
    /// function (delivered like any other, with retries).
    pub(crate) async fn add_schedule(&self, new: NewSchedule) -> Result<Schedule, EventError> {
        let tz = new.tz.unwrap_or_else(|| "UTC".into());
        super::schedule::parse_new(&new.cron, &tz).map_err(EventError::InvalidArgument)?;
        let path = new.path.unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.parse::<axum::http::Uri>().is_err() {
            return Err(EventError::InvalidArgument(format!(
                "path {path:?} is not an absolute path (with an optional query)"
            )));
        }
        let payload = new.payload.unwrap_or_default();
        if payload.len() as u64 > self.inner.config.event_max_payload_bytes {
            return Err(EventError::PayloadTooLarge {
                limit: self.inner.config.event_max_payload_bytes,
            });
        }
        if let Some(ct) = &new.content_type {
            validate_content_type(ct).map_err(EventError::InvalidArgument)?;
        }
        let _guard = self.inner.admin_lock.lock().await;
        if self.inner.records.get(&new.function)?.is_none() {
            return Err(EventError::FunctionNotFound(new.function));
        }
        let schedule = Schedule {
            // In a cluster, unique among every host's: random (ids that
            // come from a host's store would clash).
            id: match self.shared() {
                Some(_) => rand::random::<u64>() >> 1 | 1,
                None => self.event_store().next_id()?,
            },
            function: new.function,
            cron: new.cron,
            tz,
            path,
            payload,
            content_type: new.content_type,
            created_at_ms: now_ms(),
            last_fired_ms: 0,
            next_ms: None,
        };
        match self.shared() {
            Some(shared) => shared.put_schedule(&schedule).await?,
            None => {
                self.event_store()
                    .put_schedule(schedule.clone(), Durability::Flushed)
                    .await?
            }
        }
        self.plane().wake.notify_one();
        tracing::info!(function = %schedule.function, cron = %schedule.cron, id = %format_id(schedule.id), "schedule added");
        Ok(schedule.with_next(now_ms()))
    }

    /// Schedules (of one function if given), oldest first.
    pub(crate) fn schedules(&self, function: Option<&str>) -> Result<Vec<Schedule>, EventError> {
        let mut all = match self.shared() {
            Some(shared) => shared.schedules(),
            None => self.event_store().schedules()?,
        };
        all.retain(|s| function.is_none_or(|f| s.function == f));
        let now = now_ms();
        Ok(all.into_iter().map(|s| s.with_next(now)).collect())
    }

    /// Deletes a schedule.
    pub(crate) async fn delete_schedule(&self, id: &str) -> Result<(), EventError> {
        let not_found = || EventError::ScheduleNotFound(id.to_string());
        let n = parse_id(id).ok_or_else(not_found)?;
        let _guard = self.inner.admin_lock.lock().await;
        let deleted = match self.shared() {
            Some(shared) => shared.delete_schedule(n).await?,
            None => {
                self.event_store()
                    .delete_schedule(n, Durability::Flushed)
                    .await?
            }
        };
        if !deleted {
            return Err(not_found());
        }
        tracing::info!(id, "schedule deleted");
        Ok(())
    }
}

impl crate::function::FunctionEvents for EventsCtx {
    fn purge_function_events<'a>(
        &'a self,
        function: &'a str,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { Ok(EventsCtx::purge_function_events(self, function).await?) })
    }

    fn forget_in_cluster<'a>(
        &'a self,
        function: &'a str,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if let Some(shared) = self.shared() {
                shared.forget_function(function).await?;
            }
            Ok(())
        })
    }
}
