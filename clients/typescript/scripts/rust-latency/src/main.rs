//! `rust-latency ENDPOINT ITERATIONS`: sequential acquire→release cycles with one
//! `baton::client::Client` (one connection), printing one JSON line of latency figures in
//! milliseconds — the same measurement as `clients/typescript/scripts/latency.ts`.

use std::time::{Duration, Instant};

use baton::client::Client;

/// Cycles run before measuring (connection set-up, first allocations).
const WARMUP: usize = 50;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .ok_or("usage: rust-latency ENDPOINT ITERATIONS")?;
    let iterations: usize = args
        .next()
        .ok_or("usage: rust-latency ENDPOINT ITERATIONS")?
        .parse()?;
    let client = Client::new(&[endpoint])?;
    let ttl = Duration::from_secs(30);
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..WARMUP + iterations {
        let started = Instant::now();
        let granted = client
            .try_acquire("latency-rust", "rust-latency", ttl)
            .await?;
        client.release("latency-rust", granted.lease.token).await?;
        if i >= WARMUP {
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    println!(
        "{{\"client\":\"rust\",\"iterations\":{},\"mean_ms\":{:.3},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
        samples.len(),
        mean,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
