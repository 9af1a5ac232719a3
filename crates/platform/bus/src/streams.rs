//! How Bootfleet's JetStream streams are made: with the replica count this process was given
//! (`BOOTFLEET_JETSTREAM_REPLICAS`, default 1; 3 on a three-node NATS cluster), and raised on a
//! stream an earlier version made with fewer. The build queue, the artifact object store and
//! the idempotency bucket all go through [`ensure_stream`] or [`raise_replicas`].

use async_nats::jetstream::{self, stream};

/// The environment variable of the replica count.
pub const REPLICAS_VAR: &str = "BOOTFLEET_JETSTREAM_REPLICAS";

/// The most replicas JetStream keeps of a stream.
pub const MAX_REPLICAS: usize = 5;

/// The replica count `value` asks for: a whole number from 1 to [`MAX_REPLICAS`].
pub fn parse_replicas(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_REPLICAS).contains(&n) => Ok(n),
        _ => Err(format!(
            "{REPLICAS_VAR}={value:?}: expected a whole number from 1 to {MAX_REPLICAS}"
        )),
    }
}

/// Gets the stream `config` names, making it with `replicas` replicas when it is missing. A
/// stream that has fewer is raised to `replicas` (JetStream moves the copies while it serves);
/// one that has more keeps them (an operator's choice, or another process's setting).
pub async fn ensure_stream(
    js: &jetstream::Context,
    mut config: stream::Config,
    replicas: usize,
) -> Result<stream::Stream, String> {
    config.num_replicas = replicas;
    let name = config.name.clone();
    let mut stream = js
        .get_or_create_stream(config)
        .await
        .map_err(|e| format!("cannot create the stream {name}: {e}"))?;
    if stream.cached_info().config.num_replicas < replicas {
        raise(js, stream.cached_info().config.clone(), replicas).await?;
        stream = js
            .get_stream(&name)
            .await
            .map_err(|e| format!("cannot read the stream {name}: {e}"))?;
    }
    Ok(stream)
}

/// Raises the existing stream `name` to `replicas` replicas if it has fewer.
pub async fn raise_replicas(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<(), String> {
    let mut stream = js
        .get_stream(name)
        .await
        .map_err(|e| format!("cannot read the stream {name}: {e}"))?;
    let info = stream
        .info()
        .await
        .map_err(|e| format!("cannot read the stream {name}: {e}"))?;
    if info.config.num_replicas < replicas {
        raise(js, info.config.clone(), replicas).await?;
    }
    Ok(())
}

async fn raise(
    js: &jetstream::Context,
    mut config: stream::Config,
    replicas: usize,
) -> Result<(), String> {
    tracing::info!(
        stream = %config.name,
        from = config.num_replicas,
        to = replicas,
        "raising the stream's replicas"
    );
    let name = config.name.clone();
    config.num_replicas = replicas;
    js.update_stream(&config)
        .await
        .map_err(|e| format!("cannot raise the stream {name} to {replicas} replicas: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_one_to_five() {
        assert_eq!(parse_replicas("1"), Ok(1));
        assert_eq!(parse_replicas(" 3 "), Ok(3));
        assert_eq!(parse_replicas("5"), Ok(5));
        for bad in ["0", "6", "-1", "three", ""] {
            assert!(parse_replicas(bad).is_err(), "{bad}");
        }
    }
}
