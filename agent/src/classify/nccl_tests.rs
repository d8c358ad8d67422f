//! Tests of the NCCL/PyTorch-distributed line parser on lines as users posted them in public issue
//! reports (the issue is named above each; addresses are the reporters' own, some redacted by them).

use super::*;

fn p(line: &str) -> NcclLine {
    parse(line).unwrap_or_else(|| panic!("not recognized: {line}"))
}

// ---- IB completion errors -------------------------------------------------------------------

#[test]
fn ib_completion_with_status_and_ipv6_gids() {
    // https://github.com/NVIDIA/nccl/issues/1405
    let l = p(
        "kp-ddp-worker-0:3468:3905 [4] ib_plugin.c:1615 NCCL WARN NET/IB : Got completion from peer 10.216.210.236<54862> with status=12 opcode=0 len=0 vendor err 129 (Recv) localGid fd00:1148:9000:5000:4:200:3:ff22 remoteGidsfd00:1148:9000:5000:4:200:3:ff1f",
    );
    assert_eq!(l.kind, NcclKind::IbCompletion);
    assert_eq!(l.class(), EventClass::IbCompletionError);
    assert_eq!(l.hostname.as_deref(), Some("kp-ddp-worker-0"));
    assert_eq!(l.pid, Some(3468));
    assert_eq!(l.device, Some(4));
    assert_eq!(l.peer.as_deref(), Some("10.216.210.236"));
    assert_eq!(l.peer_port, Some(54862));
    assert_eq!(l.wc_status, Some(12));
    assert_eq!(l.vendor_err, Some(129));
    assert_eq!(l.error.as_deref(), Some("IBV_WC_RETRY_EXC_ERR"));
    assert_eq!(l.local_gid.as_deref(), Some("fd00:1148:9000:5000:4:200:3:ff22"));
    assert_eq!(l.remote_gid.as_deref(), Some("fd00:1148:9000:5000:4:200:3:ff1f"));
}

#[test]
fn ib_completion_roce_gids_name_the_nics_while_the_peer_is_the_oob_socket() {
    // https://github.com/NVIDIA/nccl/issues/1814
    let l = p(
        "hostname-test:984:1357 [4] ib_plugin.c:1615 NCCL WARN NET/IB : Got completion from peer 172.36.143.59<44206> with status=12 opcode=129 len=65536 vendor err 129 (Recv) localGid ::ffff:29.87.88.182 remoteGids::ffff:29.87.4.221",
    );
    assert_eq!(l.peer.as_deref(), Some("172.36.143.59"));
    assert_eq!(l.local_gid.as_deref(), Some("29.87.88.182"));
    assert_eq!(l.remote_gid.as_deref(), Some("29.87.4.221"));
}

#[test]
fn ib_completion_flush_error_after_the_first() {
    // https://github.com/NVIDIA/nccl/issues/1814 (the follow-up lines: status 5 is a flushed request)
    let l = p(
        "hostname-test:984:1357 [4] ib_plugin.c:1615 NCCL WARN NET/IB : Got completion from peer 172.36.143.59<44206> with status=5 opcode=32656 len=32659 vendor err 249 (Recv) localGid ::ffff:29.87.88.182 remoteGids::ffff:29.87.4.221",
    );
    assert_eq!((l.wc_status, l.vendor_err), (Some(5), Some(249)));
    assert_eq!(l.error.as_deref(), Some("IBV_WC_WR_FLUSH_ERR"));
}

#[test]
fn ib_completion_old_format_with_error_comma() {
    // https://github.com/pytorch/pytorch/issues/81628 (title)
    let l = p(
        "NCCL WARN NET/IB : Got completion from peer 192.168.17.147<38560> with error 12, opcode 0, len 0, vendor err 129",
    );
    assert_eq!(l.peer.as_deref(), Some("192.168.17.147"));
    assert_eq!(l.peer_port, Some(38560));
    assert_eq!(l.wc_status, Some(12));
    assert_eq!(l.vendor_err, Some(129));
}

#[test]
fn ib_completion_inside_pytorchs_one_line_error_summary() {
    // https://github.com/tatsu-lab/stanford_alpaca/issues/207
    let l = p(
        "terminate called after throwing an instance of 'std::runtime_error' what(): NCCL error: remote process exited or there was a network error, NCCL version 2.14.3 ncclRemoteError: A call failed possibly due to a network error or a remote process exiting prematurely. Last error: NET/IB : Got completion from peer 11.214.147.122<39138> with error 12, opcode 0, len 0, vendor err 129",
    );
    assert_eq!(l.kind, NcclKind::IbCompletion);
    assert_eq!(l.peer.as_deref(), Some("11.214.147.122"));
    assert_eq!(l.wc_status, Some(12));
}

#[test]
fn ib_completion_local_protection_error_on_send() {
    // https://github.com/NVIDIA/nccl-tests/issues/252
    let l = p(
        "kolyoz2:25146:25854 [0] ib_plugin.c:1105 NCCL WARN NET/IB : Got completion from peer 10.0.35.1<49189> with error 4, opcode 5327, len 5327, vendor err 81 (Send)",
    );
    assert_eq!(l.hostname.as_deref(), Some("kolyoz2"));
    assert_eq!(l.device, Some(0));
    assert_eq!(l.wc_status, Some(4));
    assert_eq!(l.error.as_deref(), Some("IBV_WC_LOC_PROT_ERR"));
    assert_eq!(l.peer.as_deref(), Some("10.0.35.1"));
}

#[test]
fn ib_completion_from_a_vendor_plugin_without_prefix() {
    // https://github.com/NVIDIA/nccl/issues/1664 (title; the reporter's plugin names itself NET/IBP)
    let l = p(
        "NET/IBP:Got completion from peer 7.6.13.83<36315> with status=12 opcode=32698 len=32696 vendor err 129 (Send)",
    );
    assert_eq!(l.peer.as_deref(), Some("7.6.13.83"));
    assert_eq!(l.peer_port, Some(36315));
    assert_eq!(l.wc_status, Some(12));
    assert_eq!(l.hostname, None);
}

#[test]
fn ib_completion_current_format_names_status_and_hca() {
    // Built from the format string of NVIDIA/nccl src/transport/net_ib (2.2x): `status=%s(%d)
    // opcode=%s(%d) vendor_err=%u … hca %s`.
    let l = p(
        "gpu-a17:2211:2390 [3] transport/net_ib.cc:2411 NCCL WARN NET/IB: Got completion from peer 10.0.8.21<41327> with status=IBV_WC_RETRY_EXC_ERR(12) opcode=IBV_WC_SEND(0) vendor_err=129  localGid ::ffff:10.1.3.17 remoteGids::ffff:10.1.3.21 hca mlx5_3",
    );
    assert_eq!(l.wc_status, Some(12));
    assert_eq!(l.error.as_deref(), Some("IBV_WC_RETRY_EXC_ERR"));
    assert_eq!(l.vendor_err, Some(129));
    assert_eq!(l.hca.as_deref(), Some("mlx5_3"));
    assert_eq!(l.remote_gid.as_deref(), Some("10.1.3.21"));
    assert_eq!(l.local_gid.as_deref(), Some("10.1.3.17"));
    assert_eq!((l.hostname.as_deref(), l.pid, l.device), (Some("gpu-a17"), Some(2211), Some(3)));
}

// ---- socket errors --------------------------------------------------------------------------

#[test]
fn connection_reset_with_cri_and_new_timestamp_prefix() {
    // https://github.com/NVIDIA/nccl/issues/1920
    let raw = "2025-11-24T03:20:21.001125857Z [2025-11-24 11:20:21] gpu-server320 [5] misc/socket.cc:46 NCCL WARN socketProgressOpt: Call to send to 10.44.137.149<52905> failed : Connection reset by peer";
    let l = p(raw);
    assert_eq!(l.kind, NcclKind::PeerReset);
    assert_eq!(l.class(), EventClass::NcclPeerConnection);
    assert_eq!(l.hostname.as_deref(), Some("gpu-server320"));
    assert_eq!(l.device, Some(5));
    assert_eq!(l.peer.as_deref(), Some("10.44.137.149"));
    assert_eq!(l.peer_port, Some(52905));
    assert_eq!(l.error.as_deref(), Some("Connection reset by peer"));
}

#[test]
fn connection_reset_in_pytorchs_last_error() {
    // https://github.com/NVIDIA/nccl/issues/2076 (the reporter shortened the address)
    let l = p("socketProgressOpt: Call to recv from 172....<33759> failed : Connection reset by peer");
    assert_eq!(l.kind, NcclKind::PeerReset);
    assert_eq!(l.peer_port, Some(33759));
}

#[test]
fn broken_pipe_names_the_peer() {
    // https://github.com/NVIDIA/nccl/issues/795
    let l = p(
        "a100-st-p4d24xlarge-22:183006:183220 [1] misc/socket.cc:518 NCCL WARN Net : Call to recv from 10.200.84.247<58355> failed : Broken pipe",
    );
    assert_eq!(l.kind, NcclKind::PeerReset);
    assert_eq!(l.peer.as_deref(), Some("10.200.84.247"));
    assert_eq!(l.error.as_deref(), Some("Broken pipe"));
    assert_eq!(l.device, Some(1));
}

#[test]
fn connection_closed_by_a_peer_named_by_host() {
    // https://github.com/NVIDIA/nccl/issues/795
    let l = p(
        "a100-st-p4d24xlarge-22:183006:183181 [1] misc/socket.cc:538 NCCL WARN Net : Connection closed by remote peer a100-st-p4d24xlarge-22.luciodelelis-92732890-0458-4f76-8369-c4fee80b23e7.pcluster<47861>",
    );
    assert_eq!(
        l.peer.as_deref(),
        Some("a100-st-p4d24xlarge-22.luciodelelis-92732890-0458-4f76-8369-c4fee80b23e7.pcluster")
    );
    assert_eq!(l.peer_port, Some(47861));
}

#[test]
fn connection_closed_with_only_the_device_in_front() {
    // https://github.com/NVIDIA/nccl/issues/1612
    let l = p("[0] misc/socket.cc:71 NCCL WARN socketProgress: Connection closed by remote peer 10.10.1.3<36138>");
    assert_eq!(l.device, Some(0));
    assert_eq!(l.hostname, None);
    assert_eq!(l.peer.as_deref(), Some("10.10.1.3"));
}

#[test]
fn connection_closed_title_form() {
    // https://github.com/NVIDIA/nccl/issues/1232 (title)
    let l = p("NCCL WARN socketProgress: Connection closed by remote peer node2<42830>");
    assert_eq!(l.peer.as_deref(), Some("node2"));
    assert_eq!(l.peer_port, Some(42830));
}

#[test]
fn connect_failure_is_its_own_kind() {
    // https://github.com/NVIDIA/nccl-tests/issues/166
    let l = p(
        "ubuntu:39964:40075 [0] misc/socket.cc:483 NCCL WARN socketStartConnect: Connect to 10.0.0.2<45763> failed : Software caused connection abort",
    );
    assert_eq!(l.kind, NcclKind::ConnectFailed);
    assert_eq!(l.peer.as_deref(), Some("10.0.0.2"));
    assert_eq!(l.error.as_deref(), Some("Software caused connection abort"));
}

#[test]
fn gloo_read_error_names_the_peer() {
    // https://github.com/RVC-Project/Retrieval-based-Voice-Conversion-WebUI/issues/1882
    let l = p(
        "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:589] Read error [192.168.70.92]:25266: Connection reset by peer",
    );
    assert_eq!(l.kind, NcclKind::PeerReset);
    assert_eq!(l.peer.as_deref(), Some("192.168.70.92"));
    assert_eq!(l.peer_port, Some(25266));
}

// ---- watchdog -------------------------------------------------------------------------------

#[test]
fn watchdog_timeout_with_launcher_and_rank_tags() {
    // https://github.com/hiyouga/LlamaFactory/issues/7396
    let l = p(
        "[80746] [rank0]:[E321 02:07:08.408271257 ProcessGroupNCCL.cpp:607] [Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=1580, OpType=ALLREDUCE, NumelIn=466119168, NumelOut=466119168, Timeout(ms)=600000) ran for 600060 milliseconds before timing out.",
    );
    assert_eq!(l.kind, NcclKind::WatchdogTimeout);
    assert_eq!(l.class(), EventClass::NcclTimeout);
    assert_eq!(l.rank, Some(0));
    assert_eq!(l.seq, Some(1580));
    assert_eq!(l.op.as_deref(), Some("ALLREDUCE"));
    assert_eq!(l.timeout_ms, Some(600_000));
    assert_eq!(l.ran_ms, Some(600_060));
}

#[test]
fn watchdog_progress_gives_the_last_completed_collective() {
    // https://github.com/hiyouga/LlamaFactory/issues/7396
    let l = p(
        "[80749] [rank3]:[E321 02:07:08.465224069 ProcessGroupNCCL.cpp:1664] [PG 1 Rank 3] Exception (either an error or timeout) detected by watchdog at work: 1580, last enqueued NCCL work: 1582, last completed NCCL work: 1579.",
    );
    assert_eq!(l.kind, NcclKind::WatchdogProgress);
    assert_eq!(l.rank, Some(3));
    assert_eq!(l.pg.as_deref(), Some("1"));
    assert_eq!((l.seq, l.last_enqueued, l.last_completed), (Some(1580), Some(1582), Some(1579)));
}

#[test]
fn watchdog_reduce_scatter() {
    // https://github.com/hiyouga/LlamaFactory/issues/6269
    let l = p(
        "[rank4]:[E1206 18:44:12.755262105 ProcessGroupNCCL.cpp:607] [Rank 4] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7753, OpType=_REDUCE_SCATTER_BASE, NumelIn=544997376, NumelOut=68124672, Timeout(ms)=600000) ran for 600099 milliseconds before timing out.",
    );
    assert_eq!(l.rank, Some(4));
    assert_eq!(l.op.as_deref(), Some("_REDUCE_SCATTER_BASE"));
    assert_eq!(l.seq, Some(7753));
}

#[test]
fn watchdog_progress_with_pg_guid() {
    // https://github.com/XPixelGroup/BasicSR/issues/737
    let l = p(
        "[rank1]:[E626 06:24:44.906457629 ProcessGroupNCCL.cpp:1785] [PG ID 0 PG GUID 0(default_pg) Rank 1] Exception (either an error or timeout) detected by watchdog at work: 808, last enqueued NCCL work: 811, last completed NCCL work: 807.",
    );
    assert_eq!(l.rank, Some(1));
    assert_eq!(l.pg.as_deref(), Some("0"));
    assert_eq!(l.last_completed, Some(807));
    assert_eq!(l.seq, Some(808));
}

#[test]
fn watchdog_timeout_old_format_without_numel() {
    // https://github.com/OFA-Sys/OFA/issues/271
    let l = p(
        "[E ProcessGroupNCCL.cpp:737] [Rank 1] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=469508, OpType=ALLREDUCE, Timeout(ms)=1800000) ran for 1802212 milliseconds before timing out.",
    );
    assert_eq!(l.rank, Some(1));
    assert_eq!(l.seq, Some(469508));
    assert_eq!(l.timeout_ms, Some(1_800_000));
}

#[test]
fn a_lagging_rank_reports_an_older_sequence_number() {
    // https://github.com/pytorch/pytorch/issues/118369: rank 7 sat at 64088 while rank 0 was at 96120.
    let behind = p(
        "[E ProcessGroupNCCL.cpp:458] [Rank 7] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=64088, OpType=ALLREDUCE, Timeout(ms)=1800000) ran for 25625251 milliseconds before timing out.",
    );
    let ahead = p(
        "[E ProcessGroupNCCL.cpp:458] [Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=96120, OpType=ALLREDUCE, Timeout(ms)=1800000) ran for 25624887 milliseconds before timing out.",
    );
    assert_eq!((behind.rank, behind.seq), (Some(7), Some(64088)));
    assert_eq!((ahead.rank, ahead.seq), (Some(0), Some(96120)));
}

#[test]
fn watchdog_broadcast() {
    // https://github.com/NVIDIA/nccl/issues/1409
    let l = p(
        "    [rank7]:[E816 01:45:40.183009389 ProcessGroupNCCL.cpp:607] [Rank 7] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=80078, OpType=BROADCAST, NumelIn=5056, NumelOut=5056, Timeout(ms)=600000) ran for 600026 milliseconds before timing out.",
    );
    assert_eq!((l.rank, l.seq, l.op.as_deref()), (Some(7), Some(80078), Some("BROADCAST")));
}

// ---- result codes ---------------------------------------------------------------------------

#[test]
fn dist_backend_error_is_a_remote_error() {
    // https://github.com/NVIDIA/nccl/issues/1928
    let l = p(
        "[rank3]: torch.distributed.DistBackendError: NCCL error in: /opt/pytorch/pytorch/torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:3763, remote process exited or there was a network error, NCCL version 2.28.8",
    );
    assert_eq!(l.kind, NcclKind::CommError);
    assert_eq!(l.class(), EventClass::NcclError);
    assert_eq!(l.error.as_deref(), Some("ncclRemoteError"));
    assert_eq!(l.rank, Some(3));
}

#[test]
fn nccl_remote_error_line() {
    // https://github.com/NVIDIA/nccl/issues/1928
    let l = p(
        "[rank3]: ncclRemoteError: A call failed possibly due to a network error or a remote process exiting prematurely.",
    );
    assert_eq!(l.error.as_deref(), Some("ncclRemoteError"));
}

#[test]
fn unhandled_system_error_is_nccl_system_error() {
    // https://github.com/NVIDIA/nccl/issues/875
    let l = p(
        "RuntimeError: NCCL error in: /home/builder/mc3/envs/pytorch-build/envs/pytorch-build/conda-bld/pytorch_1673601922403/work/torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1191, unhandled system error, NCCL version 2.10.3",
    );
    assert_eq!(l.error.as_deref(), Some("ncclSystemError"));
}

#[test]
fn a_warn_behind_mpirun_tags_names_host_and_device() {
    // https://github.com/NVIDIA/nccl/issues/957
    let l = p(
        "Fri Aug 11 12:31:45 2023[1,0]<stdout>:tomte401:1850301:1881341 [0] transport.cc:154 NCCL WARN Cuda failure 'invalid argument'",
    );
    assert_eq!(l.kind, NcclKind::CommError);
    assert_eq!((l.hostname.as_deref(), l.pid, l.device), (Some("tomte401"), Some(1850301), Some(0)));
}

#[test]
fn async_events_name_the_port_when_newer_nccl_prints_it() {
    // `WARN("NET/IB : Got async event : %s")` (NVIDIA/nccl src/transport/net_ib.cc) and the newer form
    // with `%s:%d` (device:port) in front.
    let l = p("gpu-a17:2211:2300 [0] NCCL WARN NET/IB : Got async event : port error");
    assert_eq!((l.kind, l.error.as_deref(), l.hca.as_deref()), (NcclKind::AsyncEvent, Some("port error"), None));
    let l = p("gpu-a17:2211:2300 [0] NCCL WARN NET/IB : mlx5_4:1 Got async event : local catastrophic error");
    assert_eq!((l.hca.as_deref(), l.error.as_deref()), (Some("mlx5_4"), Some("local catastrophic error")));
}

#[test]
fn a_stuck_watchdog_is_a_timeout() {
    let l = p(
        "[rank0]:[E ProcessGroupNCCL.cpp:1316] [PG 0 Rank 0] ProcessGroupNCCL's watchdog got stuck for 480 seconds without making progress in monitoring enqueued collectives.",
    );
    assert_eq!((l.kind, l.timeout_ms, l.rank), (NcclKind::WatchdogTimeout, Some(480_000), Some(0)));
}

// ---- what is not evidence, and prefixes -----------------------------------------------------

#[test]
fn info_narration_is_not_evidence_but_its_prefix_parses() {
    // https://github.com/NVIDIA/nccl/issues/1405 and https://github.com/NVIDIA/nccl/issues/1232
    assert!(parse("kp-ddp-worker-0:3468:3905 [4] NCCL INFO transport/net.cc:1302 -> 6").is_none());
    let line = "[1] node2:22555:22555 [0] NCCL INFO Channel 00/0 : 2[1] -> 1[0] [receive] via NET/Socket/0";
    assert!(parse(line).is_none());
    let pre = parse_prefix(line).unwrap();
    assert_eq!((pre.hostname.as_deref(), pre.pid, pre.device), (Some("node2"), Some(22555), Some(0)));
    assert_eq!(pre.level, "INFO");
}

#[test]
fn torchrun_tag_gives_the_local_rank() {
    let l = p(
        "[default3]:gpu-b02:77120:77301 [3] misc/socket.cc:538 NCCL WARN Net : Connection closed by remote peer 10.4.0.12<52216>",
    );
    assert_eq!(l.local_rank, Some(3));
    assert_eq!(l.hostname.as_deref(), Some("gpu-b02"));
    assert_eq!(l.peer.as_deref(), Some("10.4.0.12"));
}

#[test]
fn ordinary_lines_are_not_evidence() {
    for l in [
        "",
        "epoch 3 step 1200 loss 2.31",
        "wandb: Network error (ConnectionError), entering retry loop. Connection reset by peer",
        "Traceback (most recent call last):",
        "\u{0}\u{ff}<<<>>>[[]]NCCL",
        "NCCL WARN",
        // https://github.com/google/nccl-fastsocket/issues/4: a start-up warning that breaks nothing.
        "full-debug2-test-1:4024:4048 [0] net_fastsocket.cc:765 NCCL WARN Cannot get incoming CPU.",
    ] {
        assert_eq!(parse(l), None, "{l:?}");
    }
}

#[test]
fn cri_prefix_is_split_off() {
    assert_eq!(
        strip_cri("2024-05-01T10:00:00.123456789Z stderr F [rank1]: ncclRemoteError: x"),
        Some(("[rank1]: ncclRemoteError: x", true))
    );
    assert_eq!(strip_cri("2024-05-01T10:00:00.1Z stdout P part"), Some(("part", false)));
    assert_eq!(strip_cri("just a line"), None);
}

#[test]
fn gid_forms() {
    assert_eq!(gid_addr("::ffff:10.1.2.3"), "10.1.2.3");
    assert_eq!(gid_addr("fe80::1"), "fe80::1");
    assert_eq!(gid_addr("nonsense"), "nonsense");
}

#[test]
fn pytorch_nan_check_assertion_names_the_rank() {
    // Built from the CUDA runtime's device-assertion format and PyTorch's
    // torch/csrc/distributed/c10d/NanCheck.cu (`CUDA_KERNEL_ASSERT(!isnan(data[i]))` in `checkForNaN`),
    // behind torchrun's rank tag.
    let l = p(
        "[rank5]:/opt/pytorch/pytorch/torch/csrc/distributed/c10d/NanCheck.cu:26: checkForNaN: block: [417,0,0], thread: [65,0,0] Assertion `!isnan(data[i])` failed.",
    );
    assert_eq!(l.kind, NcclKind::CommError);
    assert_eq!(l.class(), EventClass::NcclError);
    assert_eq!(l.error.as_deref(), Some(super::NAN_CHECK_FAILED));
    assert_eq!(l.rank, Some(5));
    // A failed assertion of another kernel is no NaN check.
    assert!(parse("/pytorch/aten/src/ATen/native/cuda/IndexKernel.cu:92: operator(): block: [0,0,0], thread: [0,0,0] Assertion `idx >= 0` failed.").is_none());
}
