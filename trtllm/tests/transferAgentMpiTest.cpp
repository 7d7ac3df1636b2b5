/* TensorRT-LLM's transferAgentTest cases with the agents in two processes of one mpiexec:
 * rank 0 holds agent0 (and agent2), rank 1 holds agent1. Run with MPIXFER_TRTLLM_COMM=world
 * (every agent in one context over MPI_COMM_WORLD; the first agent creation is collective).
 * The test starts MPI itself, so the adapter is MPI's guest here, and exchanges connection
 * info strings over MPI_COMM_WORLD. Bytes are checked on the process that owns them. */
#include <mpi.h>

#include "agentTestUtils.h"

#include <cstdio>

using namespace mpixfer_trtllm_test;

namespace {

int gRank = -1;
int gSize = 0;

/* @p s from @p root to every rank. */
std::string bcastString(std::string s, int root)
{
    int len = static_cast<int>(s.size());
    MPI_Bcast(&len, 1, MPI_INT, root, MPI_COMM_WORLD);
    s.resize(static_cast<size_t>(len));
    if (len > 0)
        MPI_Bcast(&s[0], len, MPI_CHAR, root, MPI_COMM_WORLD);
    return s;
}

void barrier()
{
    MPI_Barrier(MPI_COMM_WORLD);
}

/* Did every rank pass so far? (a rank's failure stops both at the same point) */
bool allOk(bool ok)
{
    int mine = ok ? 1 : 0, all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return all == 1;
}

class TransferAgentMpiTest : public ::testing::Test {
  protected:
    void SetUp() override
    {
        if (gSize != 2)
            GTEST_SKIP() << "needs exactly 2 processes (mpiexec -n 2), got " << gSize;
    }

    void TearDown() override
    {
        if (gSize == 2)
            barrier();
    }
};

/* Rank 0: agent0 with memory0 (10s); rank 1: agent1 with memory1 (1s). agent0 loads agent1
 * by connection info. */
struct Pair {
    std::string const agent0{"agent0"}, agent1{"agent1"};
    std::unique_ptr<BaseTransferAgent> agent;
    std::vector<char> memory;
    std::unique_ptr<RegisterDescs> reg;
    std::unique_ptr<RegisterDescs> remoteReg; /* rank 0: agent1's memory1, by address */

    explicit Pair(size_t size = 100) : memory(size, gRank == 0 ? 10 : 1)
    {
        agent = makeAgent(gRank == 0 ? agent0 : agent1);
        reg = std::make_unique<RegisterDescs>(MemoryType::kDRAM,
                                              std::vector<MemoryDesc>{MemoryDesc{memory}});
        agent->registerMemory(*reg);
        std::string info = bcastString(gRank == 1 ? agent->getLocalConnectionInfo() : "", 1);
        uint64_t addr = reinterpret_cast<uintptr_t>(memory.data());
        MPI_Bcast(&addr, 1, MPI_UINT64_T, 1, MPI_COMM_WORLD);
        remoteReg = std::make_unique<RegisterDescs>(
            MemoryType::kDRAM, std::vector<MemoryDesc>{MemoryDesc{addr, size, 0}});
        if (gRank == 0) {
            agent->loadRemoteAgent(agent1, info);
            EXPECT_TRUE(waitRemoteDescs(*agent, agent1, *remoteReg));
        }
    }

    ~Pair()
    {
        barrier();
        agent->deregisterMemory(*reg);
    }
};

TEST_F(TransferAgentMpiTest, Basic)
{
    Pair p;
    if (gRank == 0) {
        TransferRequest writeReq{TransferOp::kWRITE, *p.reg, *p.remoteReg, p.agent1};
        auto status = p.agent->submitTransferRequests(writeReq);
        EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
        EXPECT_TRUE(status->isCompleted());
    }
    barrier();
    if (gRank == 1) {
        EXPECT_EQ(p.memory, std::vector<char>(100, 10));
    }
}

TEST_F(TransferAgentMpiTest, Basic2)
{
    Pair p;
    if (gRank == 0) {
        TransferRequest readReq{TransferOp::kREAD, *p.reg, *p.remoteReg, p.agent1};
        auto status = p.agent->submitTransferRequests(readReq);
        EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
        EXPECT_EQ(p.memory, std::vector<char>(100, 1));
    }
}

TEST_F(TransferAgentMpiTest, Connect)
{
    /* Rank 0: agent0 and agent2 register the same memory0; both use agent1's one info. */
    std::string const agent0{"agent0"}, agent1{"agent1"}, agent2{"agent2"};
    std::vector<char> memory(100, gRank == 0 ? 10 : 1);
    MemoryDescs mem{MemoryType::kDRAM, {MemoryDesc{memory}}};
    std::unique_ptr<BaseTransferAgent> a, b;
    if (gRank == 0) {
        a = makeAgent(agent0);
        b = makeAgent(agent2);
        a->registerMemory(mem);
        b->registerMemory(mem);
    } else {
        a = makeAgent(agent1);
        a->registerMemory(mem);
    }
    std::string info = bcastString(gRank == 1 ? a->getLocalConnectionInfo() : "", 1);
    uint64_t addr = reinterpret_cast<uintptr_t>(memory.data());
    MPI_Bcast(&addr, 1, MPI_UINT64_T, 1, MPI_COMM_WORLD);
    MemoryDescs remote{MemoryType::kDRAM, {MemoryDesc{addr, 100, 0}}};

    for (int round = 0; round < 2; round++) {
        if (gRank == 0) {
            std::fill(memory.begin(), memory.end(), static_cast<char>(10 + round));
            BaseTransferAgent &sender = round == 0 ? *a : *b;
            sender.loadRemoteAgent(agent1, info);
            ASSERT_TRUE(allOk(waitRemoteDescs(sender, agent1, remote)));
            TransferRequest writeReq{TransferOp::kWRITE, mem, remote, agent1};
            EXPECT_EQ(sender.submitTransferRequests(writeReq)->wait(), TransferState::kSUCCESS);
        } else {
            ASSERT_TRUE(allOk(true));
        }
        barrier();
        if (gRank == 1) {
            EXPECT_EQ(memory, std::vector<char>(100, static_cast<char>(10 + round)))
                << "round " << round;
            std::fill(memory.begin(), memory.end(), 1);
        }
        barrier();
    }
    if (gRank == 0)
        b->deregisterMemory(mem);
    a->deregisterMemory(mem);
}

TEST_F(TransferAgentMpiTest, SyncMessage)
{
    Pair p;
    std::string const syncMessage{"agent_sync_message"};
    std::string const syncMessage2{"two_agent_sync_message"};
    std::string const syncMessage3{"three_agent_sync_message"};
    std::string const syncMessage4{"four_agent_sync_message"};
    std::string const binary("\0bin\0ary\xff\x01\0", 12);

    /* A WRITE, then a separate notification; then a second one alone. */
    if (gRank == 0) {
        TransferRequest writeReq{TransferOp::kWRITE, *p.reg, *p.remoteReg, p.agent1};
        auto status = p.agent->submitTransferRequests(writeReq);
        EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
        p.agent->notifySyncMessage(p.agent1, syncMessage);
        barrier();
        p.agent->notifySyncMessage(p.agent1, syncMessage2);
    } else {
        auto notif = waitNotified(*p.agent);
        ASSERT_EQ(notif.size(), 1u);
        ASSERT_EQ(notif[p.agent0].size(), 1u);
        EXPECT_EQ(notif[p.agent0][0], syncMessage);
        EXPECT_EQ(p.memory, std::vector<char>(100, 10));
        barrier();
        auto notif2 = waitNotified(*p.agent);
        ASSERT_EQ(notif2.size(), 1u);
        ASSERT_EQ(notif2[p.agent0].size(), 1u);
        EXPECT_EQ(notif2[p.agent0][0], syncMessage2);
    }
    barrier();

    /* The reverse: agent1 loads agent0 by connection info and notifies straight after. */
    std::string info0 = bcastString(gRank == 0 ? p.agent->getLocalConnectionInfo() : "", 0);
    uint64_t addr0 = reinterpret_cast<uintptr_t>(p.memory.data());
    MPI_Bcast(&addr0, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    MemoryDescs remote0{MemoryType::kDRAM, {MemoryDesc{addr0, 100, 0}}};
    if (gRank == 1) {
        p.agent->loadRemoteAgent(p.agent0, info0);
        p.agent->notifySyncMessage(p.agent0, syncMessage3);
    } else {
        auto notif3 = waitNotified(*p.agent);
        ASSERT_EQ(notif3.size(), 1u);
        ASSERT_EQ(notif3[p.agent1].size(), 1u);
        EXPECT_EQ(notif3[p.agent1][0], syncMessage3);
        std::fill(p.memory.begin(), p.memory.end(), 0);
    }
    barrier();

    /* A WRITE back with its sync message: the bytes are there when the message is seen.
     * Then a binary message (NUL bytes) and an empty one. */
    if (gRank == 1) {
        std::fill(p.memory.begin(), p.memory.end(), 5);
        EXPECT_TRUE(p.agent->checkRemoteDescs(p.agent0, remote0));
        TransferRequest writeReq{TransferOp::kWRITE, *p.reg, remote0, p.agent0, syncMessage4};
        auto status = p.agent->submitTransferRequests(writeReq);
        EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
        p.agent->notifySyncMessage(p.agent0, binary);
        p.agent->notifySyncMessage(p.agent0, std::string());
    } else {
        auto notif4 = waitNotified(*p.agent);
        ASSERT_EQ(notif4.size(), 1u);
        ASSERT_GE(notif4[p.agent1].size(), 1u);
        EXPECT_EQ(notif4[p.agent1][0], syncMessage4);
        EXPECT_EQ(p.memory, std::vector<char>(100, 5));
        std::vector<SyncMessage> rest(notif4[p.agent1].begin() + 1, notif4[p.agent1].end());
        auto const start = std::chrono::steady_clock::now();
        while (rest.size() < 2 && std::chrono::steady_clock::now() - start < kPollBound) {
            auto more = p.agent->getNotifiedSyncMessages();
            for (auto &m : more[p.agent1])
                rest.push_back(m);
        }
        ASSERT_EQ(rest.size(), 2u);
        EXPECT_EQ(rest[0], binary);
        EXPECT_EQ(rest[1], std::string());
    }
}

TEST_F(TransferAgentMpiTest, WaitZeroLargeThenInvalidate)
{
    size_t const size = 40u << 20;
    Pair p(size);
    if (gRank == 0) {
        for (size_t i = 0; i < size; i++)
            p.memory[i] = static_cast<char>(i * 31 + 7);
        TransferRequest writeReq{TransferOp::kWRITE, *p.reg, *p.remoteReg, p.agent1};
        auto status = p.agent->submitTransferRequests(writeReq);
        TransferState first = status->wait(0);
        EXPECT_TRUE(first == TransferState::kIN_PROGRESS || first == TransferState::kSUCCESS);
        EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
        EXPECT_TRUE(status->isCompleted());
    }
    barrier();
    if (gRank == 1) {
        bool same = true;
        for (size_t i = 0; i < size && same; i++)
            same = p.memory[i] == static_cast<char>(i * 31 + 7);
        EXPECT_TRUE(same);
        std::fill(p.memory.begin(), p.memory.end(), 1);
    }
    barrier();
    if (gRank == 0) {
        p.agent->invalidateRemoteAgent(p.agent1);
        TransferRequest writeReq{TransferOp::kWRITE, *p.reg, *p.remoteReg, p.agent1};
        std::unique_ptr<TransferStatus> status;
        std::string text = thrownText([&] { status = p.agent->submitTransferRequests(writeReq); });
        if (text.empty()) {
            EXPECT_EQ(status->wait(), TransferState::kFAILURE);
        } else {
            EXPECT_NE(text.find("MPIXFER_ERR_NOT_FOUND"), std::string::npos) << text;
        }
    }
    barrier();
    if (gRank == 1) {
        EXPECT_EQ(p.memory[0], 1) << "nothing may move after invalidation";
    }
}

/* The destructor completes (or fails) what is in flight and never hangs: agent0 drops a
 * 40 MB WRITE's status and then itself right after submitting it. */
TEST_F(TransferAgentMpiTest, DestroyWithTransferInFlight)
{
    size_t const size = 40u << 20;
    auto p = std::make_unique<Pair>(size);
    if (gRank == 0) {
        std::fill(p->memory.begin(), p->memory.end(), 42);
        auto const start = std::chrono::steady_clock::now();
        {
            TransferRequest writeReq{TransferOp::kWRITE, *p->reg, *p->remoteReg, p->agent1};
            auto status = p->agent->submitTransferRequests(writeReq);
        }
        p->agent.reset(); /* completes the WRITE, drops the registration */
        EXPECT_LT(std::chrono::steady_clock::now() - start, kPollBound);
        p->reg = std::make_unique<RegisterDescs>(MemoryType::kDRAM, std::vector<MemoryDesc>{});
        p->agent = makeAgent("agent0b"); /* ~Pair deregisters (an empty list) */
    }
    barrier();
    if (gRank == 1) {
        EXPECT_EQ(p->memory.front(), 42);
        EXPECT_EQ(p->memory.back(), 42);
    }
    p.reset();
}

} // namespace

int main(int argc, char **argv)
{
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &gRank);
    MPI_Comm_size(MPI_COMM_WORLD, &gSize);
    ::testing::InitGoogleTest(&argc, argv);
    int rc = RUN_ALL_TESTS();
    int code = exitCode(rc);
    /* The adapter's context goes at the start of MPI_Finalize (it is MPI's guest here). */
    MPI_Finalize();
    return code;
}
