//! One connection type over a single Redis and a Redis Cluster.
//!
//! Every key a command or script touches shares one hash tag (a partition
//! `{pN}`, the routing state `{r}`, an outbox `{o:…}`), so the same commands
//! work on both: the cluster client sends each to the node owning its slot.
//! The one exception is reading every partition's routing stream at once,
//! which [`crate::RoutingStreams`] does per partition on a cluster.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Where Redis is.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Topology {
    /// One server (or a Sentinel-managed primary behind a fixed address).
    #[default]
    Standalone,
    /// A Redis Cluster; `url` is one seed node and these are more.
    Cluster { seeds: Vec<String> },
}

/// Seeds without their passwords.
impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Topology::Standalone => f.write_str("Standalone"),
            Topology::Cluster { seeds } => f
                .debug_struct("Cluster")
                .field(
                    "seeds",
                    &seeds
                        .iter()
                        .map(|s| crate::redact_url(s))
                        .collect::<Vec<_>>(),
                )
                .finish(),
        }
    }
}

/// A connection to Redis: cheap to clone, connects lazily, reconnects by
/// itself.
#[derive(Clone)]
pub enum RedisConn {
    Standalone(ConnectionManager),
    Cluster(Arc<LazyCluster>),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standalone(_) => f.write_str("RedisConn::Standalone"),
            Self::Cluster(_) => f.write_str("RedisConn::Cluster"),
        }
    }
}

/// A cluster connection made on first use (discovering the slot map needs
/// the cluster up; the daemon must start while it is not).
pub struct LazyCluster {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

impl std::fmt::Debug for LazyCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyCluster")
            .field("connected", &self.conn.initialized())
            .finish()
    }
}

impl LazyCluster {
    async fn get(&self) -> redis::RedisResult<ClusterConnection> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

impl RedisConn {
    pub(crate) fn standalone(
        client: &redis::Client,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<RedisConn, redis::RedisError> {
        let mc = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        ConnectionManager::new_lazy_with_config(client.clone(), mc).map(RedisConn::Standalone)
    }

    pub(crate) fn cluster(
        nodes: Vec<redis::ConnectionInfo>,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<RedisConn, redis::RedisError> {
        let client = ClusterClient::builder(nodes)
            .connection_timeout(connect_timeout)
            .response_timeout(response_timeout)
            .retries(2)
            .min_retry_wait(50)
            .max_retry_wait(500)
            .tcp_settings(crate::tcp_settings())
            .build()?;
        Ok(RedisConn::Cluster(Arc::new(LazyCluster {
            client,
            conn: OnceCell::new(),
        })))
    }

    /// True on a Redis Cluster, where one command may not span hash tags.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(lazy) => Box::pin(async move {
                let mut c = lazy.get().await?;
                c.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(lazy) => Box::pin(async move {
                let mut c = lazy.get().await?;
                c.req_packed_commands(pipeline, offset, count).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(_) => 0,
        }
    }
}
