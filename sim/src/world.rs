//! The simulated world of one run: a turmoil simulation with a host per broker, the
//! controller, the CDC connector and every job task, plus the driver that commits the
//! workload to the source database on schedule and watches the pipeline drain. The world also
//! offers the control surface (crash, restart, partition, hold, latency) that fault injection
//! drives; it decides nothing about when.

use crate::broker::{run_broker, BrokerDisk, BrokerSetup, ProduceErrors};
use crate::client::SimLog;
use crate::cluster::ClusterMeta;
use crate::controller::{run_controller, ControllerSetup};
use crate::drain::{DrainProbe, Reader};
use crate::group_coordinator::{run_group_coordinator, GroupCoordinatorSetup, GroupStore};
use crate::host_env::{SharedCheckpoints, SharedSource, SimEnv, Slowdowns};
use crate::progress::Recorder;
use crate::schema_registry::{run_schema_registry, SchemaRegistrySetup};
use crate::txn_coordinator::{run_txn_coordinator, TxnCoordinatorSetup, TxnStore};
use crate::wire::SharedArena;
use crate::{LatencyRange, NetworkConfig, PlatformConfig};
use nrtsim_history::{Observation, Payment, RunHeader, SourceChange, TopicName};
use nrtsim_pipeline::enrich::ReferenceStore;
use nrtsim_pipeline::fraud::FraudConfig;
use nrtsim_pipeline::jobs::{
    cdc_transactional, run_cdc, run_fraud_scorer, run_group_lake_sink, run_lake_sink,
    run_spend_aggregator, run_stream_task, GroupSettings, StreamRole, TaskSettings, TxnSettings,
};
use nrtsim_pipeline::lake::LakeTable;
use nrtsim_pipeline::spend::SpendConfig;
use nrtsim_pipeline::{
    CheckpointStore, CostConfig, Delivery, LakeCommitPolicy, PipelineConfig, RedoAtEnd,
    TopicPartition, TxMetadata, TxnCommit, TxnIdScope,
};
use nrtsim_workloads::reference::ReferenceData;
use nrtsim_workloads::{Op, Row, SchemaTimeline, SeedTree, Transaction, Workload, WorkloadConfig};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

/// Everything a run is made of: the scenario's settings and the seed.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Scenario name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The command that replays the run.
    pub replay: String,
    /// The scenario file's text, kept in the history's header.
    pub scenario_toml: String,
    /// How long the workload runs, in ms.
    pub duration_ms: u64,
    /// How long the pipeline may take to drain afterwards, in ms.
    pub drain_timeout_ms: u64,
    /// The workload.
    pub workload: WorkloadConfig,
    /// The cluster.
    pub platform: PlatformConfig,
    /// The jobs.
    pub pipeline: PipelineConfig,
    /// Per-record and per-commit costs.
    pub costs: CostConfig,
    /// The links.
    pub network: NetworkConfig,
    /// Stream tasks that get a standby instance (`<task>-standby`), started by
    /// [`World::fail_over`].
    pub standbys: Vec<String>,
}

/// Why the simulation stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A host's software failed.
    #[error("simulation failed: {0}")]
    Turmoil(String),
    /// The run neither drained nor reached its drain deadline within the simulation's limit.
    #[error("simulation failed: the run did not end within {horizon_s} simulated seconds")]
    DidNotEnd {
        /// The limit, in simulated seconds.
        horizon_s: u64,
    },
}

/// A run in progress.
pub struct World {
    sim: turmoil::Sim<'static>,
    meta: Rc<RefCell<ClusterMeta>>,
    recorder: Rc<RefCell<Recorder>>,
    lake: Rc<RefCell<LakeTable>>,
    disks: Vec<Rc<RefCell<BrokerDisk>>>,
    produce_errors: Rc<RefCell<ProduceErrors>>,
    /// The hosts a `slow` fault holds.
    slowdowns: Rc<RefCell<Slowdowns>>,
    hosts: Vec<String>,
    network: LatencyRange,
    finished: bool,
    /// Stream tasks whose standby instance has been started.
    failed_over: Rc<RefCell<BTreeSet<String>>>,
    /// The group coordinator's durable state.
    groups: Rc<RefCell<GroupStore>>,
    /// Commits the workload and watches the pipeline drain (set once the jobs are added).
    driver: Option<Driver>,
    /// Simulated ms after which a run that has not ended fails.
    horizon_ms: u64,
}

/// The names of the hosts a run has, in a fixed order.
pub fn host_names(platform: &PlatformConfig, pipeline: &PipelineConfig) -> Vec<String> {
    let mut hosts: Vec<String> = (0..platform.brokers)
        .map(|b| format!("broker-{b}"))
        .collect();
    hosts.push("controller".into());
    if pipeline.transactional() {
        hosts.push("txn-coordinator".into());
    }
    if pipeline.group_lake_sink() {
        hosts.push("group-coordinator".into());
    }
    if pipeline.schema_registry.enabled {
        hosts.push("schema-registry".into());
    }
    hosts.push("cdc".into());
    let p = &pipeline.parallelism;
    for (job, n) in [
        ("standardize", p.standardize),
        ("enrich", p.enrich),
        ("lake", p.lake),
    ] {
        hosts.extend((0..n).map(|i| format!("{job}-{i}")));
    }
    if pipeline.fraud.enabled {
        hosts.push("fraud-0".into());
    }
    if pipeline.spend.enabled {
        hosts.push("spend-0".into());
    }
    hosts
}

/// A consumer of the enriched topic beside the lake sink.
#[derive(Clone)]
enum Consumer {
    Fraud(FraudConfig),
    Spend(SpendConfig),
}

fn assigned(partitions: u32, tasks: u32, task: u32) -> Vec<u32> {
    (0..partitions)
        .filter(|p| p % tasks.max(1) == task)
        .collect()
}

impl World {
    /// Builds the world for `spec`: hosts registered, nothing run yet.
    pub fn new(spec: &RunSpec) -> World {
        let seeds = SeedTree::new(spec.seed);
        let horizon = spec.duration_ms + spec.drain_timeout_ms + 120_000;
        let sim = turmoil::Builder::new()
            .simulation_duration(Duration::from_millis(horizon))
            .tick_duration(Duration::from_millis(1))
            .min_message_latency(spec.network.latency.min.to_std())
            .max_message_latency(spec.network.latency.max.to_std())
            .rng_seed(seeds.derive("network"))
            .build();
        let platform = spec.platform.clone();
        let mut cluster = ClusterMeta::new(
            platform.brokers,
            platform.partitions,
            platform.replication_factor,
        );
        if spec.pipeline.schema_registry.enabled {
            cluster.add_single_partition_topic(
                TopicName::Schemas,
                platform.brokers,
                platform.replication_factor,
            );
        }
        let meta = Rc::new(RefCell::new(cluster));
        let mut world = World {
            sim,
            meta,
            recorder: Rc::new(RefCell::new(Recorder::new(
                spec.pipeline.enrich.redo_at_end == RedoAtEnd::Wait,
            ))),
            lake: Rc::new(RefCell::new(LakeTable::with_config(
                spec.pipeline.lake.clone(),
            ))),
            disks: Vec::new(),
            slowdowns: Rc::default(),
            produce_errors: Rc::new(RefCell::new(ProduceErrors::new(
                seeds.derive("produce-errors"),
            ))),
            hosts: host_names(&spec.platform, &spec.pipeline),
            network: spec.network.latency,
            finished: false,
            failed_over: Rc::default(),
            groups: Rc::default(),
            driver: None,
            horizon_ms: horizon,
        };
        world
            .hosts
            .extend(spec.standbys.iter().map(|t| format!("{t}-standby")));
        world
            .recorder
            .borrow_mut()
            .record(Observation::Header(RunHeader {
                scenario: spec.scenario.clone(),
                seed: spec.seed,
                replay: spec.replay.clone(),
                nrtsim_version: env!("CARGO_PKG_VERSION").to_string(),
                scenario_toml: spec.scenario_toml.clone(),
            }));
        let arena: SharedArena = Rc::default();
        world.add_cluster(spec, &arena);
        world.add_jobs(spec, &seeds, &arena);
        world
    }

    fn add_cluster(&mut self, spec: &RunSpec, arena: &SharedArena) {
        for b in 0..spec.platform.brokers {
            let disk = Rc::new(RefCell::new(BrokerDisk::default()));
            self.disks.push(disk.clone());
            let setup = BrokerSetup {
                id: b,
                disk,
                arena: arena.clone(),
                platform: spec.platform.clone(),
                append_us: spec.costs.broker_append_per_record.us,
                errors: self.produce_errors.clone(),
                slowdowns: self.slowdowns.clone(),
                recorder: self.recorder.clone(),
            };
            self.sim
                .host(format!("broker-{b}"), move || run_broker(setup.clone()));
        }
        let setup = ControllerSetup {
            meta: self.meta.clone(),
            arena: arena.clone(),
            platform: spec.platform.clone(),
        };
        self.sim
            .host("controller", move || run_controller(setup.clone()));
        if spec.pipeline.transactional() {
            let setup = TxnCoordinatorSetup {
                store: Rc::new(RefCell::new(TxnStore::default())),
                meta: self.meta.clone(),
                arena: arena.clone(),
                recorder: self.recorder.clone(),
                request_timeout_ms: spec.pipeline.producer.request_timeout.ms(),
            };
            self.sim.host("txn-coordinator", move || {
                run_txn_coordinator(setup.clone())
            });
        }
        if spec.pipeline.schema_registry.enabled {
            let setup = SchemaRegistrySetup {
                arena: arena.clone(),
                meta: self.meta.clone(),
                compatibility: spec.pipeline.schema_registry.compatibility,
            };
            self.sim.host("schema-registry", move || {
                run_schema_registry(setup.clone())
            });
        }
        if spec.pipeline.group_lake_sink() {
            let setup = GroupCoordinatorSetup {
                store: self.groups.clone(),
                arena: arena.clone(),
            };
            self.sim.host("group-coordinator", move || {
                run_group_coordinator(setup.clone())
            });
        }
    }

    fn add_jobs(&mut self, spec: &RunSpec, seeds: &SeedTree, arena: &SharedArena) {
        let checkpoints = SharedCheckpoints::default();
        // Validation has checked that the DDL applies.
        let source =
            SharedSource::with_schemas(SchemaTimeline::new(&spec.workload.ddl).unwrap_or_default());
        let pipeline = &spec.pipeline;
        let timer_commit_ms = (pipeline.lake.commit == LakeCommitPolicy::Timer)
            .then(|| pipeline.lake.commit_interval.ms().max(1));
        // Checkpoints complete when every task of the job acknowledged them: for the stream
        // jobs unless they commit per poll (at-most-once), and for a two-phase lake sink.
        let par = &pipeline.parallelism;
        let names =
            |job: &str, n: u32| -> Vec<String> { (0..n).map(|t| format!("{job}-{t}")).collect() };
        if pipeline.delivery != Delivery::AtMostOnce {
            checkpoints.coordinate("standardize", names("standardize", par.standardize));
            checkpoints.coordinate("enrich", names("enrich", par.enrich));
        }
        if pipeline.delivery == Delivery::ExactlyOnce && timer_commit_ms.is_none() {
            checkpoints.coordinate("lake", names("lake", par.lake));
        }
        let settings = |per_record_us: u64| TaskSettings {
            delivery: pipeline.delivery,
            checkpoint_interval_ms: pipeline.checkpoint_interval.ms().max(1),
            per_record_us,
            max_changes_per_read: 2000,
            restart_backoff_ms: 1000,
            partition_key: pipeline.partition_key,
            tx_counters_persisted: pipeline.tx_metadata == TxMetadata::Persisted,
            batch_records: pipeline.producer.batch_records as usize,
            transactions: pipeline.transactional().then(|| TxnSettings {
                commit_interval_ms: (pipeline.transactions.commit == TxnCommit::Interval)
                    .then(|| pipeline.transactions.commit_interval.ms().max(1)),
                on_abort: pipeline.transactions.on_abort,
            }),
            schema_registry: pipeline.schema_registry.enabled,
            cdc: pipeline.cdc.clone(),
            // Validation has checked that the pattern compiles.
            capture: pipeline.cdc.capture().unwrap_or_default(),
        };
        // Each host builds its client afresh at every start. Under exactly-once delivery the
        // producer id is the task's own (a transactional task's is then set by the
        // coordinator; without transactions it is restored with its checkpoint); otherwise
        // every start is a new producer, as a restarted Kafka client is.
        let client = {
            let arena = arena.clone();
            let meta = self.meta.clone();
            let checkpoints = checkpoints.clone();
            let pipeline = pipeline.clone();
            move |host_index: usize, host: &str| {
                let incarnation = checkpoints.next_incarnation(host);
                let stable = (host_index as u64 + 1) << 32;
                let pid = if pipeline.delivery == Delivery::ExactlyOnce {
                    stable
                } else {
                    stable | incarnation
                };
                SimLog::new(
                    arena.clone(),
                    meta.clone(),
                    pipeline.producer.clone(),
                    pipeline.consumer.clone(),
                    pid,
                )
            }
        };
        let client = Rc::new(client);
        let index = |name: &str| self.hosts.iter().position(|h| h == name).unwrap_or(0);

        {
            let (client, recorder, checkpoints, source) = (
                client.clone(),
                self.recorder.clone(),
                checkpoints.clone(),
                source.clone(),
            );
            let s = settings(spec.costs.cdc_per_record.us);
            let i = index("cdc");
            let txn_timeout_ms = cdc_transactional(&s).then(|| pipeline.transactions.timeout.ms());
            let slowdowns = self.slowdowns.clone();
            self.sim.host("cdc", move || {
                let mut log = client(i, "cdc");
                if let Some(timeout_ms) = txn_timeout_ms {
                    // Its records and its source position commit together.
                    log = log.transactional("cdc", "cdc", timeout_ms);
                }
                let env = SimEnv::new("cdc", recorder.clone(), slowdowns.clone());
                let (checkpoints, source, s) = (checkpoints.clone(), source.clone(), s.clone());
                async move {
                    run_cdc(&mut log, &env, &checkpoints, &source, &s).await;
                    Ok(())
                }
            });
        }

        let partitions = spec.platform.partitions;
        let refdata = Rc::new(ReferenceData::new(&spec.workload, seeds));
        let par = pipeline.parallelism.clone();
        let tasks_and_standbys = [("standardize", par.standardize), ("enrich", par.enrich)]
            .into_iter()
            .flat_map(|(job, tasks)| (0..tasks).map(move |t| (job, tasks, t)))
            .flat_map(|(job, tasks, t)| {
                let name = format!("{job}-{t}");
                let standby = spec
                    .standbys
                    .contains(&name)
                    .then(|| (job, tasks, t, format!("{name}-standby")));
                std::iter::once((job, tasks, t, name)).chain(standby)
            })
            .collect::<Vec<_>>();
        for (job, tasks, t, turmoil_host) in tasks_and_standbys {
            let name = format!("{job}-{t}");
            // A standby instance runs the same task: the same checkpoints, the same input
            // positions, and under `transactions.id = "task"` the same transactional.id,
            // whose InitProducerId fences the first instance.
            let standby = turmoil_host != name;
            let txn_id = match pipeline.transactions.id {
                TxnIdScope::Task => name.clone(),
                TxnIdScope::Instance => turmoil_host.clone(),
            };
            let failed_over = self.failed_over.clone();
            let (client, recorder, checkpoints) =
                (client.clone(), self.recorder.clone(), checkpoints.clone());
            let per_record = if job == "enrich" {
                spec.costs.enrich_per_record.us
            } else {
                spec.costs.standardize_per_record.us
            };
            let s = settings(per_record);
            let mine = assigned(partitions, tasks, t);
            let i = index(&turmoil_host);
            let enrich_cfg = pipeline.enrich.clone();
            let refdata = refdata.clone();
            let is_enrich = job == "enrich";
            let host = name.clone();
            let txn_timeout_ms = pipeline
                .transactional()
                .then(|| pipeline.transactions.timeout.ms());
            let slowdowns = self.slowdowns.clone();
            let machine = turmoil_host.clone();
            self.sim.host(turmoil_host, move || {
                let mut log = client(i, &host);
                if let Some(timeout_ms) = txn_timeout_ms {
                    // Input positions commit under the task's name, whichever instance
                    // commits them.
                    log = log.transactional(&txn_id, &host, timeout_ms);
                }
                let env =
                    SimEnv::new(&host, recorder.clone(), slowdowns.clone()).on_machine(&machine);
                let role = if is_enrich {
                    StreamRole::Enrich {
                        store: ReferenceStore::new(refdata.clone(), enrich_cfg.store_refresh.ms()),
                        max_attempts: enrich_cfg
                            .attempt_counter
                            .then_some(enrich_cfg.max_redo_attempts),
                        on_miss: enrich_cfg.on_miss,
                    }
                } else {
                    StreamRole::Standardize
                };
                let (checkpoints, s, mine) = (checkpoints.clone(), s.clone(), mine.clone());
                let (failed_over, host) = (failed_over.clone(), host.clone());
                async move {
                    // A standby waits until the job manager fails the task over to it.
                    while standby && !failed_over.borrow().contains(&host) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    run_stream_task(&mut log, &env, &checkpoints, role, &mine, &s).await;
                    Ok(())
                }
            });
        }

        for t in 0..par.lake {
            let name = format!("lake-{t}");
            let (client, recorder, checkpoints, lake) = (
                client.clone(),
                self.recorder.clone(),
                checkpoints.clone(),
                self.lake.clone(),
            );
            let s = settings(spec.costs.lake_per_record.us);
            let mine = assigned(partitions, par.lake, t);
            let i = index(&name);
            let commit_ms = spec.costs.lake_commit.ms();
            let timer_ms = timer_commit_ms;
            let host = name.clone();
            let group = pipeline.group_lake_sink().then(|| GroupSettings {
                group: "lake".into(),
                heartbeat_interval_ms: pipeline.consumer.heartbeat_interval.ms().max(1),
                session_timeout_ms: pipeline.consumer.session_timeout.ms(),
                auto_commit_interval_ms: pipeline
                    .consumer
                    .enable_auto_commit
                    .then(|| pipeline.consumer.auto_commit_interval.ms().max(1)),
            });
            let flush_ms = timer_commit_ms.unwrap_or(s.checkpoint_interval_ms);
            let slowdowns = self.slowdowns.clone();
            self.sim.host(name, move || {
                let mut log = client(i, &host).client_id(&host);
                let env = SimEnv::new(&host, recorder.clone(), slowdowns.clone());
                let (checkpoints, s, mine, lake) =
                    (checkpoints.clone(), s.clone(), mine.clone(), lake.clone());
                let group = group.clone();
                async move {
                    if let Some(g) = group {
                        run_group_lake_sink(&mut log, &env, &lake, &s, &g, flush_ms, commit_ms)
                            .await;
                        return Ok(());
                    }
                    run_lake_sink(
                        &mut log,
                        &env,
                        &checkpoints,
                        &lake,
                        &mine,
                        &s,
                        commit_ms,
                        timer_ms,
                    )
                    .await;
                    Ok(())
                }
            });
        }

        // Consumers of the enriched topic beside the lake sink, each one task over every
        // partition.
        let consumers = [
            (
                "fraud-0",
                spec.costs.fraud_per_record.us,
                pipeline
                    .fraud
                    .enabled
                    .then(|| Consumer::Fraud(pipeline.fraud.clone())),
            ),
            (
                "spend-0",
                spec.costs.spend_per_record.us,
                pipeline
                    .spend
                    .enabled
                    .then(|| Consumer::Spend(pipeline.spend.clone())),
            ),
        ];
        for (name, per_record, consumer) in consumers {
            let Some(consumer) = consumer else { continue };
            let (client, recorder, checkpoints) =
                (client.clone(), self.recorder.clone(), checkpoints.clone());
            let s = settings(per_record);
            let all: Vec<u32> = (0..partitions).collect();
            let i = index(name);
            let host = name.to_string();
            let slowdowns = self.slowdowns.clone();
            self.sim.host(name, move || {
                let mut log = client(i, &host);
                let env = SimEnv::new(&host, recorder.clone(), slowdowns.clone());
                let (checkpoints, s, all, consumer) = (
                    checkpoints.clone(),
                    s.clone(),
                    all.clone(),
                    consumer.clone(),
                );
                async move {
                    match &consumer {
                        Consumer::Fraud(cfg) => {
                            run_fraud_scorer(&mut log, &env, &checkpoints, &all, &s, cfg).await
                        }
                        Consumer::Spend(cfg) => {
                            run_spend_aggregator(&mut log, &env, &checkpoints, &all, &s, cfg).await
                        }
                    }
                    Ok(())
                }
            });
        }

        let mut readers = Vec::new();
        for (host, enabled) in [
            ("fraud-0", pipeline.fraud.enabled),
            ("spend-0", pipeline.spend.enabled),
        ] {
            if enabled {
                readers.push(Reader {
                    host: host.to_string(),
                    topic: TopicName::Enriched,
                    partitions: (0..partitions).collect(),
                    group: false,
                });
            }
        }
        for (job, topic, tasks) in [
            ("standardize", TopicName::Raw, par.standardize),
            ("enrich", TopicName::Standard, par.enrich),
            ("lake", TopicName::Enriched, par.lake),
        ] {
            if job == "lake" && pipeline.group_lake_sink() {
                // One reader for the group: whoever holds a partition, its position is the
                // group's.
                readers.push(Reader {
                    host: job.to_string(),
                    topic,
                    partitions: (0..partitions).collect(),
                    group: true,
                });
                continue;
            }
            for t in 0..tasks {
                readers.push(Reader {
                    host: format!("{job}-{t}"),
                    topic,
                    partitions: assigned(partitions, tasks, t),
                    group: false,
                });
                if job == "enrich" && pipeline.enrich.redo_at_end == RedoAtEnd::Wait {
                    // Redo must be replayed to its end with nothing parked again.
                    readers.push(Reader {
                        host: format!("{job}-{t}"),
                        topic: TopicName::Redo,
                        partitions: assigned(partitions, tasks, t),
                        group: false,
                    });
                }
            }
        }
        let probe = DrainProbe {
            meta: self.meta.clone(),
            disks: self.disks.clone(),
            checkpoints,
            readers,
            groups: self.groups.clone(),
            lake: self.lake.clone(),
        };
        let timing = DriveTiming {
            duration_ms: spec.duration_ms,
            deadline_ms: spec.duration_ms + spec.drain_timeout_ms,
            // Long enough for every task to checkpoint and the lake to commit twice.
            settle_ms: 2 * pipeline.checkpoint_interval.ms()
                + 2 * spec.costs.lake_commit.ms()
                + 2 * timer_commit_ms.unwrap_or(0)
                + 1000,
        };
        let workload = Workload::new(&spec.workload, seeds, spec.duration_ms);
        self.driver = Some(Driver {
            workload,
            next: None,
            recorder: self.recorder.clone(),
            source,
            probe,
            timing,
            last_lsn: 0,
            stage: DriverStage::Committing,
            wake_ms: 0,
        });
    }

    /// Advances the simulation one tick; returns true once the run has ended.
    pub fn step(&mut self) -> Result<bool, SimError> {
        if self.finished {
            return Ok(true);
        }
        // Every host runs until the run ends: the driver says when (turmoil's own verdict,
        // which waits for client hosts, has none to wait for).
        self.sim
            .step()
            .map_err(|e| SimError::Turmoil(e.to_string()))?;
        let elapsed = self.now_ms();
        if let Some(driver) = &mut self.driver {
            // A host's task whose timer fires at W is polled on the tick after the one that
            // reaches W, after the hosts before it; the driver, as if last of them, acts at W
            // once the tick that ends at W + 1 is done.
            if driver.wake_ms < elapsed {
                let at = driver.wake_ms;
                self.finished = driver.poll(at);
            }
        }
        if !self.finished && elapsed > self.horizon_ms {
            return Err(SimError::DidNotEnd {
                horizon_s: self.horizon_ms / 1000,
            });
        }
        Ok(self.finished)
    }

    /// Simulated milliseconds since the run began.
    pub fn now_ms(&self) -> u64 {
        self.sim.elapsed().as_millis() as u64
    }

    /// Records an observation (fault injection records its faults here).
    pub fn record(&self, obs: Observation) {
        self.recorder.borrow_mut().record(obs);
    }

    /// Ends the run and hands over its history (what [`World::take_new_observations`] has not
    /// taken already).
    pub fn into_history(self) -> Vec<Observation> {
        self.recorder.borrow_mut().take()
    }

    /// Moves the observations made since the last call into `into` (which is cleared first),
    /// so that a long run can be checked and written as it goes, not held whole in memory.
    pub fn take_new_observations(&self, into: &mut Vec<Observation>) {
        self.recorder.borrow_mut().swap_into(into);
    }

    /// How many observations have been made since the last [`World::take_new_observations`].
    pub fn new_observations(&self) -> usize {
        self.recorder.borrow().held()
    }

    /// Every host's name.
    pub fn host_names(&self) -> &[String] {
        &self.hosts
    }

    /// The host that leads `tp` now, by the controller's metadata.
    pub fn leader_of(&self, tp: TopicPartition) -> Option<String> {
        self.meta
            .borrow()
            .leader(&tp)
            .map(|b| format!("broker-{b}"))
    }

    /// The hosts that follow `tp`'s leader.
    pub fn followers_of(&self, tp: TopicPartition) -> Vec<String> {
        let meta = self.meta.borrow();
        let Some(m) = meta.get(&tp) else {
            return Vec::new();
        };
        m.replicas
            .iter()
            .filter(|r| Some(**r) != m.leader)
            .map(|r| format!("broker-{r}"))
            .collect()
    }

    /// The partition's replication state by the controller's metadata.
    pub fn partition_state(&self, tp: TopicPartition) -> Option<crate::cluster::PartitionMeta> {
        self.meta.borrow().get(&tp).cloned()
    }

    /// `broker`'s replica log of `tp`: its log start (the first offset retention has not
    /// deleted) and its log end.
    pub fn replica_bounds(&self, broker: u32, tp: TopicPartition) -> Option<(u64, u64)> {
        let disk = self.disks.get(broker as usize)?.borrow();
        let log = disk.logs.get(&tp)?;
        Some((log.log_start(), log.leo()))
    }

    /// The change ids in `broker`'s replica log of `tp` from its log start, in offset order,
    /// and its high watermark as last checkpointed.
    pub fn replica_log(&self, broker: u32, tp: TopicPartition) -> (Vec<u64>, u64) {
        let Some(disk) = self.disks.get(broker as usize) else {
            return (Vec::new(), 0);
        };
        let disk = disk.borrow();
        let Some(log) = disk.logs.get(&tp) else {
            return (Vec::new(), 0);
        };
        let ids = log
            .read(0, log.leo(), usize::MAX)
            .iter()
            .map(|r| r.record.meta.change_id)
            .collect();
        (ids, log.hw_checkpoint)
    }

    /// Kills `host`; it stays down until [`World::restart`].
    pub fn crash(&mut self, host: &str) {
        if self.sim.is_host_running(host) {
            self.sim.crash(host);
        }
    }

    /// Cuts `host`'s power: it stops, and a broker keeps only what it had flushed.
    pub fn power_loss(&mut self, host: &str) {
        self.crash(host);
        let broker = host
            .strip_prefix("broker-")
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(disk) = broker.and_then(|b| self.disks.get(b)) {
            disk.borrow_mut().lose_unflushed();
        }
    }

    /// Makes broker `host` answer a `rate` share of the batches it appends with a retriable
    /// error (0 stops it); other hosts are not affected.
    pub fn set_produce_errors(&mut self, host: &str, rate: f64) {
        if let Some(b) = host
            .strip_prefix("broker-")
            .and_then(|n| n.parse::<u32>().ok())
        {
            self.produce_errors.borrow_mut().set_rate(b, rate);
        }
    }

    /// Makes `host`'s work take `factor` times as long as its costs say (1 restores its pace):
    /// a task's per-record and commit costs, a broker's appends.
    pub fn set_slowdown(&mut self, host: &str, factor: f64) {
        self.slowdowns.borrow_mut().set(host, factor);
    }

    /// Starts the standby instance of stream task `task` (registered through
    /// [`RunSpec::standbys`]); the first instance is left running. The task's job aborts its
    /// pending checkpoints, as for a restart: the first instance's acknowledgements from before
    /// no longer count.
    pub fn fail_over(&mut self, task: &str) {
        self.failed_over.borrow_mut().insert(task.to_string());
        if let Some(driver) = &self.driver {
            driver.probe.checkpoints.fail(task);
        }
    }

    /// Starts `host` again from what it kept on disk.
    pub fn restart(&mut self, host: &str) {
        self.sim.bounce(host);
    }

    /// Cuts every link between a host in `a` and one in `b`, both ways.
    pub fn partition(&mut self, a: &[String], b: &[String]) {
        for_pairs(a, b, |x, y| self.sim.partition(x, y));
    }

    /// Heals the links `partition` cut.
    pub fn repair(&mut self, a: &[String], b: &[String]) {
        for_pairs(a, b, |x, y| self.sim.repair(x, y));
    }

    /// Drops traffic from `from` to `to` only.
    pub fn partition_oneway(&mut self, from: &[String], to: &[String]) {
        for_pairs(from, to, |x, y| self.sim.partition_oneway(x, y));
    }

    /// Heals a one-way cut.
    pub fn repair_oneway(&mut self, from: &[String], to: &[String]) {
        for_pairs(from, to, |x, y| self.sim.repair_oneway(x, y));
    }

    /// Holds traffic between `a` and `b` (nothing is lost; it waits).
    pub fn hold(&mut self, a: &[String], b: &[String]) {
        for_pairs(a, b, |x, y| self.sim.hold(x, y));
    }

    /// Releases held traffic in a burst.
    pub fn release(&mut self, a: &[String], b: &[String]) {
        for_pairs(a, b, |x, y| self.sim.release(x, y));
    }

    /// Sets the latency of the links between `a` and `b`; `None` restores the network's.
    pub fn set_latency(&mut self, a: &[String], b: &[String], latency: Option<LatencyRange>) {
        let l = latency.unwrap_or(self.network);
        for_pairs(a, b, |x, y| {
            self.sim.set_link_latency(x, y, l.min.to_std());
            self.sim.set_link_max_message_latency(x, y, l.max.to_std());
        });
    }
}

fn for_pairs(a: &[String], b: &[String], mut f: impl FnMut(&str, &str)) {
    for x in a {
        for y in b {
            if x != y {
                f(x, y);
            }
        }
    }
}

struct DriveTiming {
    duration_ms: u64,
    deadline_ms: u64,
    settle_ms: u64,
}

/// Commits the workload on schedule, then waits for the pipeline to drain: until every change
/// has reached its end, or the pipeline has stayed settled (nothing in flight, see
/// [`DrainProbe`]) for `settle_ms`, or the deadline passes. It sends nothing over the network,
/// so it is not a simulated host: [`World::step`] wakes it at the simulated millisecond it
/// waits for, which spares every tick a host's runtime and eleven links.
struct Driver {
    workload: Workload,
    /// The next transaction, drawn and not yet due.
    next: Option<Transaction>,
    recorder: Rc<RefCell<Recorder>>,
    source: SharedSource,
    probe: DrainProbe,
    timing: DriveTiming,
    last_lsn: u64,
    stage: DriverStage,
    /// When it next acts.
    wake_ms: u64,
}

enum DriverStage {
    /// Committing the workload's transactions as they fall due.
    Committing,
    /// Every transaction committed; the workload's duration not yet over.
    Ending,
    /// Watching the pipeline drain; `(since when, pending then)`: it has looked settled since
    /// then.
    Draining(Option<(u64, u64)>),
    /// The run has ended.
    Done,
}

/// How often the driver looks whether the pipeline has drained.
const DRAIN_POLL_MS: u64 = 50;

impl Driver {
    /// Acts at `now`; returns true once the run has ended. Otherwise `wake_ms` is set to when
    /// it acts next, which is later than `now`.
    fn poll(&mut self, now: u64) -> bool {
        loop {
            match self.stage {
                DriverStage::Committing => {
                    if self.next.is_none() {
                        self.next = self.workload.next_transaction();
                    }
                    match self.next.take() {
                        Some(txn) if txn.commit_ms > now => {
                            self.wake_ms = txn.commit_ms;
                            self.next = Some(txn);
                            return false;
                        }
                        Some(txn) => self.commit(txn),
                        None => self.stage = DriverStage::Ending,
                    }
                }
                DriverStage::Ending => {
                    if now < self.timing.duration_ms {
                        self.wake_ms = self.timing.duration_ms;
                        return false;
                    }
                    self.recorder
                        .borrow_mut()
                        .record(Observation::WorkloadEnd { t_ms: now });
                    self.stage = DriverStage::Draining(None);
                }
                DriverStage::Draining(settled_since) => match self.drained(now, settled_since) {
                    Drain::Ended { drained } => {
                        self.recorder
                            .borrow_mut()
                            .record(Observation::RunEnd { t_ms: now, drained });
                        self.stage = DriverStage::Done;
                    }
                    Drain::Waiting(settled_since) => {
                        self.stage = DriverStage::Draining(settled_since);
                        self.wake_ms = now + DRAIN_POLL_MS;
                        return false;
                    }
                },
                DriverStage::Done => return true,
            }
        }
    }

    /// Records `txn`'s commit and appends it to the source database.
    fn commit(&mut self, txn: Transaction) {
        let changes = txn
            .changes
            .iter()
            .map(|c| SourceChange {
                lsn: c.lsn,
                key: c.key,
                op: c.op,
                digest: c.after_digest(),
                poison: c.poison,
                payment: match &c.after {
                    Some(Row::CardTransaction(t)) if c.op == Op::Create => Some(Payment {
                        account_id: t.account_id,
                        amount_cents: t.amount_cents,
                    }),
                    _ => None,
                },
                balance_cents: match &c.after {
                    Some(Row::Account(a)) => Some(a.balance_cents),
                    _ => None,
                },
            })
            .collect();
        self.last_lsn = txn.changes.last().map_or(self.last_lsn, |c| c.lsn);
        self.recorder
            .borrow_mut()
            .record(Observation::SourceCommit {
                t_ms: txn.commit_ms,
                txid: txn.txid,
                changes,
            });
        self.source.commit(txn);
    }

    /// Whether the run has ended at `now`, and whether it drained; if not, since when the
    /// pipeline has looked settled.
    fn drained(&self, now: u64, settled_since: Option<(u64, u64)>) -> Drain {
        let pending = self.recorder.borrow().pending();
        if pending == 0 {
            return Drain::Ended { drained: true };
        }
        let settled_since = if self.probe.settled(self.last_lsn) {
            match settled_since {
                Some((since, p)) if p == pending => {
                    if now - since >= self.timing.settle_ms {
                        return Drain::Ended { drained: true };
                    }
                    Some((since, p))
                }
                _ => Some((now, pending)),
            }
        } else {
            None
        };
        if now >= self.timing.deadline_ms {
            return Drain::Ended { drained: false };
        }
        Drain::Waiting(settled_since)
    }
}

/// What the driver finds when it looks whether the pipeline has drained.
enum Drain {
    /// The run has ended: everything reached its end (or settled), or the deadline passed.
    Ended { drained: bool },
    /// Not yet; `(since when, pending then)`: the pipeline has looked settled since then.
    Waiting(Option<(u64, u64)>),
}
