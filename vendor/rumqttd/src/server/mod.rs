// use tokio::io::{AsyncRead, AsyncWrite};

mod broker;
#[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
mod tls;

#[cfg(any(feature = "use-rustls", feature = "use-native-tls"))]
pub use broker::TlsReloader;
pub use broker::{Broker, LinkType, Server, SetupLimit, DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS};

// pub trait IO: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
// impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> IO for T {}
