//! Tests of the classifier: the sample file, each rule, and lines in the formats the drivers print.

mod rules {
    use super::super::*;

    fn check(line: &str, class: Class) -> Classification {
        let c = classify(line);
        assert_eq!(c.class, class, "{line:?} → {c:?}");
        c
    }

    #[test]
    fn prefixes_of_every_kind_are_stripped() {
        for (line, want) in [
            ("[  123.456] NVRM: hi", "NVRM: hi"),
            ("[Fri Aug 30 11:43:09 2024] NVRM: hi", "NVRM: hi"),
            ("6,1234,5678,-;NVRM: hi", "NVRM: hi"),
            ("<4>[   1.0] NVRM: hi", "NVRM: hi"),
            ("2024-11-15T12:02:03,470068+00:00 NVRM: hi", "NVRM: hi"),
            ("kern  :warn  : 2025-01-21T04:41:44,283575+00:00 NVRM: hi", "NVRM: hi"),
            ("Feb 23 03:28:16 host kernel: NVRM: hi", "NVRM: hi"),
            ("Dec  2 11:38:46 worker4 kernel: [  218.250668] NVRM: hi", "NVRM: hi"),
            ("Mon Jul 28 10:19:15 2025 kern.crit kernel: [ 7013.909286] eth0: hi", "eth0: hi"),
            ("[  +0.000844] nvidia x", "nvidia x"),
            ("kernel: [680111.646286] NVRM: hi", "NVRM: hi"),
        ] {
            assert_eq!(strip_prefixes(line), want, "{line}");
        }
        // A bracket that is not a time stays.
        assert_eq!(strip_prefixes("[Hardware Error]: x"), "[Hardware Error]: x");
    }

    #[test]
    fn xid_lines_give_code_device_pid_and_cause() {
        let c = check(
            "[Fri Aug 30 11:43:14 2024] NVRM: Xid (PCI:0000:cb:00): 109, pid=1797828, name=pt_main_thread, Ch 00000008",
            Class::Xid,
        );
        assert_eq!(c.xid, Some(109));
        assert_eq!(c.device.as_deref(), Some("0000:cb:00"));
        assert_eq!(c.pid, Some(1797828));
        let c = check(
            "kernel: NVRM: Xid (PCI:0000:ed:00): 45, pid=1818992, name=python3, Ch 0000000c caused by previous Xid 145",
            Class::Xid,
        );
        assert_eq!((c.xid, c.caused_by_xid), (Some(45), Some(145)));
        let c =
            check("NVRM: Xid (PCI:0000:13:00 GPU-I:05): 31, pid='<unknown>', name=<unknown>, Ch 00000008", Class::Xid);
        assert_eq!(c.device.as_deref(), Some("0000:13:00"));
        assert_eq!(c.pid, None);
        let c = check("NVRM: Xid (PCI:0000:44:00): 79, GPU has fallen off the bus", Class::Xid);
        assert_eq!(c.severity, Severity::Critical);
    }

    #[test]
    fn sxid_is_nvswitch() {
        let c = check(
            "nvidia-nvswitch3: SXid (PCI:0000:86:00.0): 12028, Non-fatal, Link 28 egress non-posted PRIV error",
            Class::NvswitchSxid,
        );
        assert_eq!(c.sxid, Some(12028));
        assert_eq!(c.device.as_deref(), Some("0000:86:00"));
        assert_eq!(c.severity, Severity::Warning);
        let c = check(
            "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 24007, Fatal, Link 30 sourcetrack TCEN0 crumbstore ECC DBE Error",
            Class::NvswitchSxid,
        );
        assert_eq!(c.severity, Severity::Critical);
    }

    #[test]
    fn fallen_off_the_bus_without_xid() {
        let c = check("[ 1843.308145] NVRM: The NVIDIA GPU 0000:b3:00.0", Class::GpuFallenOffBus);
        assert_eq!(c.device.as_deref(), Some("0000:b3:00"));
        check("               NVRM: fallen off the bus and is not responding to commands.", Class::GpuFallenOffBus);
        check("NVRM: (PCI ID: 10de:2330) installed in this system has", Class::None);
        check("NVRM: The NVIDIA GPU 0000:01:00.0 (PCI ID: 10de:1eb8)", Class::GpuDriverError);
    }

    #[test]
    fn nic_lines_name_the_nic() {
        let c = check(
            "[ 4444.035309] bond0: (slave enp83s0f0np0): link status definitely down, disabling slave",
            Class::NicLinkDown,
        );
        assert_eq!(c.nic.as_deref(), Some("enp83s0f0np0"));
        let c = check("[ 4443.974372] mlx5_core 0000:53:00.0 mlx5_3: Port: 1 Link DOWN", Class::NicLinkDown);
        assert_eq!(c.nic.as_deref(), Some("mlx5_3"));
        let c = check("mlx5_core 0000:01:00.1 eth1: Link up", Class::NicLinkUp);
        assert_eq!(c.nic.as_deref(), Some("eth1"));
        let c = check(
            "ib_mlx5_log.c:143  Transport retry count exceeded on mlx5_0:1/IB (synd 0x15 vend 0x81 hw_synd 0/0)",
            Class::IbCompletionError,
        );
        assert_eq!(c.nic.as_deref(), Some("mlx5_0"));
        check("[   11.097374] mlx5_core 0004:01:00.0: Port module event: module 0, Cable plugged", Class::None);
        check(
            "mlx5_core 0000:3b:00.0: mlx5_health_check_fatal_sensors:  health compromised - reached miss count",
            Class::NicDriverError,
        );
    }

    #[test]
    fn host_lines() {
        let c = check("[ 1234.5] Out of memory: Killed process 1440763 (perl) total-vm:87033376kB", Class::OomKill);
        assert_eq!(c.pid, Some(1440763));
        let c = check("[ 2000.1] INFO: task python3:4242 blocked for more than 120 seconds.", Class::HungTask);
        assert_eq!(c.pid, Some(4242));
        let c =
            check("[ 99.1] blk_update_request: I/O error, dev nvme0n1, sector 12345 op 0x1:(WRITE)", Class::IoError);
        assert_eq!(c.disk.as_deref(), Some("nvme0n1"));
        let c = check("[ 99.1] Buffer I/O error on dev sda1, logical block 0, async page read", Class::IoError);
        assert_eq!(c.disk.as_deref(), Some("sda"));
        let c = check(
            "EXT4-fs error (device nvme1n1p2): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0",
            Class::IoError,
        );
        assert_eq!(c.disk.as_deref(), Some("nvme1n1"));
        check("EDAC MC0: 1 CE memory read error on CPU_SrcID#0", Class::EdacCe);
        check("EDAC MC0: 1 UE memory read error on CPU_SrcID#0", Class::EdacUe);
        check("mce: [Hardware Error]: Machine check events logged", Class::Mce);
        check("pcieport 0000:00:01.0: DPC: containment event, status:0x1f01 source:0x0000", Class::PcieAerUncorrected);
    }

    #[test]
    fn benign_lines_are_none() {
        for l in [
            "[Fri Aug  9 13:32:56 2024] NVRM: GPU Board Serial Number: 1652923018111",
            "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.54.15",
            "Feb 14 05:03:41 host kernel: workqueue: ib_cache_event_task [ib_core] hogged CPU for >10000us 4 times",
            "",
            "   ",
            "[  0.000000] Linux version 6.5.0",
        ] {
            check(l, Class::None);
        }
    }

    #[test]
    fn json_output() {
        let c = classify("NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.");
        assert_eq!(to_json(&c), r#"{"class":"xid","xid":79,"device":"0000:3b:00","severity":"critical"}"#);
        assert_eq!(to_json(&classify("hello")), r#"{"class":"none"}"#);
    }

    #[test]
    fn odd_bytes_do_not_panic() {
        for l in [
            "[",
            "]",
            "[ ]",
            "Xid (",
            "Xid (PCI:",
            "SXid (",
            "1,2,3;",
            "<>",
            "фев 12 00:48:02 ядро:",
            "0000:",
            "task :",
            "slave ",
        ] {
            let _ = classify(l);
        }
    }
}

mod more_formats {
    //! Lines in the formats the drivers print, beyond the sample file.
    use super::super::*;

    #[test]
    fn real_world_shapes() {
        for (line, class, nic) in [
            (
                "mlx5_core 0000:0c:00.0: mlx5_cmd_out_err:838:(pid 1234): CREATE_MKEY(0x200) op_mod(0x0) failed, status bad parameter(0x3)",
                Class::NicDriverError,
                None,
            ),
            ("mlx5_core 0000:86:00.0: poll_health:822:(pid 0): Fatal error 1 detected", Class::NicDriverError, None),
            (
                "e1000e 0000:00:1f.6 eno1: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: None",
                Class::NicLinkUp,
                Some("eno1"),
            ),
            ("IPv6: ADDRCONF(NETDEV_CHANGE): ens1f0: link becomes ready", Class::NicLinkUp, Some("ens1f0")),
            ("bond0: (slave ens1f1): link status up again after 0 ms", Class::NicLinkUp, Some("ens1f1")),
            ("bond0: now running without any active interface!", Class::NicLinkDown, Some("bond0")),
            ("mlx5_core 0000:3b:00.0 enp59s0f0np0: TX timeout detected", Class::NetdevWatchdog, Some("enp59s0f0np0")),
            ("NETDEV WATCHDOG: enp1s0 (r8169): transmit queue 0 timed out", Class::NetdevWatchdog, Some("enp1s0")),
            ("ata1: SATA link down (SStatus 0 SControl 300)", Class::None, None),
            ("pcieport 0000:00:01.0: pciehp: Slot(1): Link Up", Class::None, None),
            ("pcieport 0000:00:01.0: pciehp: Slot(1): Link Down", Class::PcieAerUncorrected, None),
            (
                "nvidia 0000:3b:00.0: AER: PCIe Bus Error: severity=Uncorrected (Non-Fatal), type=Transaction Layer, (Requester ID)",
                Class::PcieAerUncorrected,
                None,
            ),
            (
                "pcieport 0000:00:01.1: AER: Multiple Corrected error received: 0000:00:01.1",
                Class::PcieAerCorrected,
                None,
            ),
            ("[    0.393919] mce: CPU0: Thermal monitoring enabled (TM1)", Class::None, None),
            ("MCE: In-kernel MCE decoding enabled.", Class::None, None),
            ("{2}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 0", Class::Mce, None),
            ("Memory cgroup out of memory: Killed process 2345 (python) total-vm:1kB", Class::CgroupOomKill, None),
            (
                "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/slurm/uid_0/job_77,task_memcg=/slurm/uid_0/job_77/step_0,task=python,pid=4242,uid=0",
                Class::CgroupOomKill,
                None,
            ),
            ("[ 1234.5] Out of memory: Killed process 1440763 (perl) total-vm:87033376kB", Class::OomKill, None),
            ("INFO: task kworker/u256:1:1234 blocked for more than 122 seconds.", Class::HungTask, None),
            ("nvme nvme0: I/O 512 QID 7 timeout, aborting", Class::IoError, None),
            ("sd 0:0:0:0: [sda] tag#0 FAILED Result: hostbyte=DID_OK driverbyte=DRIVER_SENSE", Class::IoError, None),
            (
                "XFS (nvme0n1p1): metadata I/O error in \"xfs_trans_read_buf_map\" at daddr 0x1 len 8 error 5",
                Class::IoError,
                None,
            ),
            ("NCCL WARN Call to ibv_modify_qp failed with error Connection timed out", Class::NcclError, None),
            (
                "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1970, unhandled system error",
                Class::NcclError,
                None,
            ),
            (
                "[Rank 3] Timeout at NCCL work: 12345, last enqueued NCCL work: 12345, last completed NCCL work: 12344.",
                Class::NcclTimeout,
                None,
            ),
            ("NVRM: API mismatch: the client has the version 535.104.05, but", Class::GpuDriverError, None),
            ("NVRM: GPU at PCI:0000:3b:00: GPU-5c7c4a3e-1111-2222-3333-444455556666", Class::None, None),
            ("nvidia-nvlink: Unregistered Nvlink Core, major device number 511", Class::None, None),
            (
                "[ERROR] detected NVSwitch fatal error 12028 on fid 0 on NVSwitch pci bus id 00000000:86:00.0 physical id 5 port 32",
                Class::NvswitchSxid,
                None,
            ),
            (
                "NVRM: Xid (PCI:0000:b7:00): 74, pid=12345, name=python, NVLink: fatal error detected on link 3(0x0, 0x0)",
                Class::Xid,
                None,
            ),
        ] {
            let c = classify(line);
            assert_eq!(c.class, class, "{line}: {c:?}");
            if let Some(n) = nic {
                assert_eq!(c.nic.as_deref(), Some(n), "{line}");
            }
        }
        assert_eq!(classify("nvme nvme0: I/O 512 QID 7 timeout, aborting").disk.as_deref(), Some("nvme0"));
        assert_eq!(classify("sd 0:0:0:0: [sda] tag#0 FAILED Result: hostbyte=DID_OK").disk.as_deref(), Some("sda"));
        assert_eq!(classify("XFS (nvme0n1p1): metadata I/O error").disk.as_deref(), Some("nvme0n1"));
        assert_eq!(classify("mlx5_core 0000:0c:00.0: mlx5_cmd_out_err:838:(pid 1234): failed").nic, None);
    }
}
