//! Seal/open throughput per core: the AES-256-GCM backends on one 64 KiB chunk (`ring`, the one the
//! crate uses, and RustCrypto `aes-gcm` for comparison), then the crate's whole path (`Keyring`:
//! per-object HKDF, chunking, allocation) on larger objects.
//!
//! Time is the benchmark thread's CPU time, not wall time: throughput per core, unaffected by other
//! processes on a shared machine taking turns on the cores (the throughputs print in GB/s, 10^9 B/s).
//!
//! `cargo bench -p trustmesh-crypto --bench seal -- --warm-up-time 1 --measurement-time 3`

// NOTE: `criterion_group!` expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce as AesGcmNonce};
use cpu_time::ThreadTime;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use trustmesh_crypto::{Keyring, LocalKeyFile, MemoryDekStore, ObjectRef};

const CHUNK: usize = 64 * 1024;
const KEY: [u8; 32] = [7; 32];
const NONCE: [u8; 12] = [9; 12];
const AAD: &[u8] = b"trustmesh/object/v1 ingest acme datasets/1/raw 1";

/// The calling thread's CPU time.
struct ThreadCpuTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = ThreadTime;
    type Value = Duration;

    fn start(&self) -> ThreadTime {
        ThreadTime::now()
    }
    fn end(&self, start: ThreadTime) -> Duration {
        start.elapsed()
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Nanoseconds as µs (times) and bytes per nanosecond as GB/s (throughputs).
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|v| *v /= 1e3);
        "µs"
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (amount, unit) = match *throughput {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => (n as f64, "GB/s"),
            Throughput::Elements(n) => (n as f64, "G elem/s"),
            Throughput::Bits(n) => (n as f64, "Gbit/s"),
        };
        values.iter_mut().for_each(|ns| *ns = amount / *ns);
        unit
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn ring_key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &KEY).expect("key"))
}

fn backends(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("chunk_64KiB");
    group.throughput(Throughput::Bytes(CHUNK as u64));

    // Benchmark only: one nonce for every iteration (never do this with real data).
    let ring = ring_key();
    let mut buf = vec![0x5a; CHUNK];
    group.bench_function(BenchmarkId::new("seal", "ring"), |b| {
        b.iter(|| {
            ring.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(NONCE),
                Aad::from(AAD),
                &mut buf,
            )
            .expect("seal")
        });
    });
    let plain = vec![0x5a; CHUNK];
    let mut sealed = plain.clone();
    let tag = ring
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(NONCE),
            Aad::from(AAD),
            &mut sealed,
        )
        .expect("seal");
    group.bench_function(BenchmarkId::new("open", "ring"), |b| {
        b.iter(|| {
            buf.copy_from_slice(&sealed);
            let nonce = Nonce::assume_unique_for_key(NONCE);
            ring.open_in_place_separate_tag(nonce, Aad::from(AAD), tag, &mut buf, 0..)
                .map(|p| p.len())
                .expect("open")
        });
    });

    let rc = Aes256Gcm::new(&KEY.into());
    let nonce = AesGcmNonce::from(NONCE);
    group.bench_function(BenchmarkId::new("seal", "aes-gcm-0.11"), |b| {
        b.iter(|| {
            rc.encrypt_inout_detached(&nonce, AAD, buf.as_mut_slice().into())
                .expect("seal")
        });
    });
    let mut sealed = plain.clone();
    let tag = rc
        .encrypt_inout_detached(&nonce, AAD, sealed.as_mut_slice().into())
        .expect("seal");
    group.bench_function(BenchmarkId::new("open", "aes-gcm-0.11"), |b| {
        b.iter(|| {
            buf.copy_from_slice(&sealed);
            rc.decrypt_inout_detached(&nonce, AAD, buf.as_mut_slice().into(), &tag)
                .expect("open");
        });
    });
    group.finish();
}

fn keyring(c: &mut Criterion<ThreadCpuTime>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let provider =
        Arc::new(LocalKeyFile::open_or_create(dir.path().join("kek")).expect("key file"));
    let keyring = Keyring::new("ingest", provider, Arc::new(MemoryDekStore::new()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let obj = ObjectRef {
        tenant: "acme",
        object: "datasets/1/raw",
        version: 1,
    };

    let mut group = c.benchmark_group("keyring");
    for size in [64 * 1024, 1 << 20, 16 << 20] {
        let plaintext = vec![0x5a; size];
        let sealed = rt.block_on(keyring.seal(&obj, &plaintext)).expect("seal");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("seal", size), |b| {
            b.iter(|| {
                rt.block_on(keyring.seal(&obj, black_box(&plaintext)))
                    .expect("seal")
            });
        });
        group.bench_function(BenchmarkId::new("open", size), |b| {
            b.iter(|| {
                rt.block_on(keyring.open(&obj, black_box(&sealed)))
                    .expect("open")
            });
        });
        // The incremental path into a reused output buffer (as an upload handler would run it).
        let mut out = Vec::with_capacity(sealed.len());
        group.bench_function(BenchmarkId::new("encryptor", size), |b| {
            b.iter(|| {
                out.clear();
                let mut encryptor = rt.block_on(keyring.encryptor(&obj)).expect("encryptor");
                encryptor
                    .update(black_box(&plaintext), &mut out)
                    .expect("update");
                encryptor.finish(&mut out).expect("finish");
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = backends, keyring
}
criterion_main!(benches);
