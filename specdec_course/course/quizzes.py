"""The course's quizzes, one per notebook: ``quiz_for("03").show()``.

An instructor can edit them here: every notebook has at least four questions, no letter is the right answer more than
40% of the time, and the right option is not given away by being the longest.
"""
from __future__ import annotations

from .quiz import Question, Quiz

Q = Question

QUIZZES: dict[str, list[Question]] = {
    "00": [
        Q("You have 50 idle CPU cores. Could they produce a 50-token greedy answer at once, one core per position?",
          ["No: the input of pass t includes token t−1, which only pass t−1 produces",
           "Yes, if every core keeps its own copy of the KV cache for its position",
           "Yes, but only for greedy decoding, since sampling needs one seed per position"],
          0, "Autoregressive generation: y_t = argmax Pr(y | x, y_<t) needs y_{t−1} first, so the passes run in turn."),
        Q("The prompt has 40 tokens and 10 new tokens have been generated with a KV cache. What does the pass that "
          "produces token 11 feed the model?",
          ["All 50 tokens again, since attention must see every earlier token",
           "Nothing new, since the cache already holds the logits of token 11",
           "Token 10 alone; the other 49 come from the cache"],
          2, "The cache keeps the keys and values of every token already read, so only the newest token is computed."),
        Q("One pass over 8 new tokens took far less than 8 times one pass over 1 token. Why?",
          ["The model skips the computation for 7 of the 8 tokens",
           "Each weight read from memory serves all 8 tokens",
           "The cache already holds the results for most of the 8 tokens"],
          1, "At small k the pass is memory-bound: reading the weights dominates, and extra tokens reuse each read."),
        Q("On some machine one pass over 6 new tokens costs 1.3 one-token passes. A speculative step checks 5 draft "
          "tokens in one such pass. Which holds?",
          ["The check costs 6 ordinary steps, so only a perfect draft pays for it",
           "The check is free there, so τ should be as large as the draft allows",
           "The check costs 1.3 ordinary steps and can yield up to 6 tokens"],
          2, "5 drafts kept plus the target's own next token: up to 6 tokens for 1.3 steps (plus the drafting). "
             "That is the whole opportunity, and its price is T(k)/T(1) measured on your own machine."),
        Q("Three interleaved rounds gave T(4)/T(1) as 1.24, 1.30 and 1.33; the table's own measurement was 1.18. In "
          "that table, k = 4 and k = 5 differ by 0.05. What do you conclude about k = 5?",
          ["Nothing yet: the four measurements span 1.18 to 1.33, wider than that step",
           "It costs more: 0.05 exceeds the 0.03 between the two closest rounds",
           "It costs more: a median of repeats never moves by as much as 0.05"],
          0, "The spread of every measurement shown, not of the closest ones, is the run's noise: a step smaller than "
             "it is not a property of the model."),
    ],
    "01": [
        Q("The confirmed text is ['The', 'cat', 'sat'] and the draft has proposed ['on', 'the']. "
          "What does the draft condition on to propose the third candidate?",
          ["['The', 'cat', 'sat'] and nothing it proposed itself",
           "['The', 'cat', 'sat', 'on', 'the']",
           "Only ['on', 'the'], its own proposals of this step"],
          1, "Each draft token is conditioned on the prefix and every earlier draft token of the step."),
        Q("A draft step costs c = 0.2 target steps, and a target pass over 2 tokens costs 1.1 one-token passes. "
          "What α must the draft beat for τ = 1 to break even?",
          ["0.30, since 1 + α must exceed 0.2 + 1.1",
           "0.20, since α must exceed c",
           "0.80, since 1 − c of the drafts must be kept"],
          0, "A τ = 1 step yields 1 + α tokens and costs c + T(2)/T(1) target steps: 1 + α > 1.3."),
        Q("A bug computes ŷ_{i+3} from the prefix and ŷ_{i+1} only, leaving out ŷ_{i+2}. Most likely consequence?",
          ["Nothing changes: the verifier repairs the context before it scores anything",
           "The final output becomes wrong, even though the target's verifier is implemented correctly",
           "ŷ_{i+3} is a guess for the wrong position: usually rejected, so the speedup drops"],
          2, "The verifier still guarantees the output, but guesses made from the wrong context are rejected."),
        Q("With greedy verification (a draft is kept only if it is the target's argmax), a draft agrees with the "
          "target only 10% of the time. What do you get?",
          ["Text that drifts toward the draft's own, but generated faster",
           "The target's own greedy output, with little or no gain",
           "An error from the verifier at the first wrong draft token"],
          1, "The draft only proposes; every kept token is the target's own choice. (Sampling needs the exact rule of "
             "notebook 04 for the same guarantee.)"),
        Q("With τ = 5 and a draft step costing c = 0.1 target steps, what does drafting cost in one speculative step?",
          ["About 0.5 target steps: five draft passes in a row",
           "About 0.1 target steps: one draft pass scores all five",
           "About 0.6 target steps: six passes, one per token kept"],
          0, "Drafting is sequential, τ passes each needing the token before it; it is cheap only because c is small."),
    ],
    "02": [
        Q("What is the main advantage of scoring all 5 draft tokens in one target pass?",
          ["It makes the target's predictions more accurate on long prompts",
           "It lets the draft skip every other token, halving its work",
           "One pass of the large model instead of five in a row"],
          2, "One memory-bound pass instead of τ sequential ones: each weight read serves every position."),
        Q("A learner's verify() returns, for 4 draft tokens, 4 booleans: does the target's argmax match each draft? "
          "What has it thrown away that the loop still needs?",
          ["The target's distributions: the rule and the next token need them",
           "Nothing: one bit per draft is all the speculative loop ever needs",
           "The draft's q, which the target's pass computes along the way"],
          0, "The acceptance rule turns p and q into decisions, and the replacement or bonus token comes from p."),
        Q("The confirmed text is 'The cat sat' and the drafts are ['on', 'the', 'mat']. How many distributions does "
          "the verification pass give, and what is the last one for?",
          ["Three, one per draft; the last judges 'mat'",
           "Four; the last gives the token after 'mat'",
           "Two; 'on' needs no check, the draft is sure"],
          1, "One per draft position plus the bonus position after the last draft."),
        Q("In that pass, which tokens does the row that judges 'mat' see?",
          ["'The cat sat' only, since no draft is verified yet",
           "'The cat sat on the mat': the whole input of the pass",
           "'The cat sat on the': everything before 'mat'"],
          2, "Causal attention: position i sees only tokens up to i, so the row judging 'mat' is read at 'the'."),
        Q("A cached pass's logits differ from one-token passes by at most 1e-4. Row A's top two logits are 12.40000 "
          "and 12.39985; row B's are 9.1 and 7.6. Whose argmax can differ between the two ways?",
          ["Both rows', since every logit in both moved",
           "Row A's: its margin is under 2 × 1e-4",
           "Neither: rounding never changes a token"],
          1, "Every logit moves by at most d, so only a margin under 2d can flip the argmax: 0.00015 < 0.0002."),
    ],
    "03": [
        Q("A step drafts τ = 6 tokens and the verdicts are A A A R A A. How many tokens does the step append to the "
          "text?",
          ["6: the five accepted drafts and the target's token",
           "4: the three kept drafts and the target's token",
           "3: the three kept drafts, and nothing from the target"],
          1, "n = Σ_t Π_{s≤t} a_s = 3 (the run stops at the first R), and every step adds the target's token: n + 1 = 4."),
        Q("A draft token has q = 0.5, the target gives it p = 0.2, and the uniform number drawn for it is r = 0.35. "
          "What is the verdict?",
          ["Accept: r = 0.35 ≤ p/q = 0.4",
           "Reject: r = 0.35 is larger than p = 0.2",
           "Reject: p < q rejects whatever r is"],
          0, "p < q, so compare r with p/q = 0.4: 0.35 ≤ 0.4, accept."),
        Q("Over three tokens the target gives p = (0.6, 0.3, 0.1); the draft SAMPLES its token from "
          "q = (0.3, 0.3, 0.4). With what probability does the draft pass the test?",
          ["About 0.25: the ratio p/q at the token the draft likes most",
           "About 0.93: min(1, p/q) at each token, weighted by p",
           "0.7: the sum of min(p, q), which is 1 − TV(p, q)"],
          2, "Each token y is drafted with probability q(y) and kept with min(1, p/q): Σ q·min(1, p/q) = Σ min(p, q) "
             "= 0.3 + 0.3 + 0.1."),
        Q("At a typical position draft A is TV(p, q_A) = 0.1 away from the target, draft B is TV(p, q_B) = 0.3 away. "
          "Under the sampling rule, what are their per-position acceptance probabilities?",
          ["0.9 for A and 0.7 for B",
           "0.1 for A and 0.3 for B",
           "0.95 for A and 0.85 for B"],
          0, "α = Σ min(p, q) = 1 − TV(p, q), with TV = ½ Σ|p − q| (not 1 − TV/2)."),
        Q("Greedy drafts, the p/q test and the target's argmax after a rejection (the textbook form). The target's "
          "argmax is 'cat' (p = 0.5); the draft proposes 'dog', with q = 0.4 and p = 0.45. What happens here?",
          ["'cat' is emitted every time, as in the target's own greedy output",
           "'dog' is rejected every time: it is not the target's argmax",
           "'dog' is accepted, since p ≥ q, though 'cat' is the argmax"],
          2, "The test accepts whenever p ≥ q, argmax or not: the textbook form does not keep the target's greedy output."),
        Q("The verdicts of a step are A R A; the third draft passed with p = 0.9. What becomes of it?",
          ["It is appended after the target's token for position 2",
           "It is discarded: it was drafted after the rejected token",
           "It is kept if a fresh r drawn for position 2 passes the test"],
          1, "Each draft is conditioned on the drafts before it; once the second is replaced, that context is gone."),
    ],
    "04": [
        Q("The draft sampled 'dog', with q(dog) = 0.5; the target gives p(dog) = 0.2. With what probability does the "
          "sampling rule keep 'dog'?",
          ["1: the draft sampled it, so it is kept", "0.2: the target's own probability of it", "0.4: the ratio p/q"],
          2, "min(1, p/q) = 0.2 / 0.5: the largest keep probability with q·a ≤ p, so 'dog' never comes out more often "
             "than the target's 0.2."),
        Q("At one position the target's p = (0.5, 0.3, 0.2) and the draft's q = (0.2, 0.3, 0.5) over three tokens. What "
          "fraction of the drafts sampled from q does the sampling rule accept there?",
          ["0.7", "0.3", "0.5"],
          0, "α = Σ min(p, q) = 0.2 + 0.3 + 0.2 = 0.7, that is 1 − TV(p, q)."),
        Q("A colleague's loop takes the token after the accepted drafts from the DRAFT's distribution instead of the "
          "target's. Its text reads fine and its speed looks normal. Which check exposes the bug?",
          ["Timing it against the correct loop, over more rounds",
           "Comparing its tokens with the target's greedy output",
           "Checking that every step adds at least one new token"],
          1, "'Fast but wrong': speed moves with the machine, while a token-for-token comparison with target-only "
             "output finds the first token where it leaves the target's path."),
        Q("Put one cycle in order: (1) the target supplies the correction, (2) the draft proposes τ tokens, "
          "(3) the rule keeps the longest accepted run, (4) the target scores all drafts in one pass.",
          ["2, 3, 4, 1", "4, 2, 3, 1", "2, 4, 3, 1"],
          2, "Draft, verify, accept, correct."),
        Q("τ = 4, and all four drafts are accepted. What does the step add, and where does its last token come from?",
          ["Four tokens: the next step's draft proposes the fifth",
           "Five: a bonus token from the target's row after draft four",
           "Five: the draft proposes a fifth, checked in the next pass"],
          1, "The verification pass already computed the target's distribution after the fourth draft: the bonus token "
             "comes from it at no extra pass."),
        Q("Two tokens: p = (0.6, 0.4), q = (0.7, 0.3). A loop drafts greedily (always token 0) but keeps the sampling "
          "rule's test min(1, p/q) and its residual correction. How often does it emit token 0?",
          ["About 0.86: more often than p's 0.6", "Exactly 0.6, as the target's p says", "0.7, as the draft's q says"],
          0, "Token 0 is proposed every time and kept with probability 0.6 / 0.7; a rejection draws from the residual, "
             "which holds only token 1. The test assumes drafts drawn from q."),
    ],
    "05": [
        Q("The target's cache held a prefix of 50 tokens, then verified τ = 4 drafts and accepted n = 1. To what length "
          "is it rolled back?",
          ["50", "55", "51"],
          2, "Prefix + accepted drafts: 50 + 1. The correction token is fed in the next step."),
        Q("KV bytes per token for a model with 24 layers, 8 KV heads of size 128, in bfloat16?",
          ["49,152", "98,304", "393,216"],
          1, "2 (keys and values) × 24 × 8 × 128 × 2 bytes = 98,304."),
        Q("Without KV caches, why does speculative decoding lose more the longer the text grows?",
          ["Each step re-reads the whole prefix in both models",
           "The acceptance rate falls as the text grows longer",
           "Rollback must copy the whole cache at every step"],
          0, "Without a cache every pass recomputes keys and values for the whole prefix, in the draft and the target."),
        Q("You want to replay each decoding step on a GPU as a CUDA graph, which needs fixed tensor shapes and "
          "addresses. Which cache and rollback fit?",
          ["A dynamic cache, cropped to the kept length",
           "A static cache whose rollback moves a counter",
           "No cache: recompute the prefix at every step"],
          1, "A static cache is allocated once; rollback moves its length counter, so shapes and addresses never change."),
        Q("All τ = 3 drafts were accepted; the prefix held 50 tokens. To what length is the DRAFT's cache rolled back?",
          ["52", "53", "54"],
          0, "The draft never read its last draft (it only proposed it), so its cache holds 50 + 2; the next step feeds "
             "the last draft and the bonus token."),
        Q("On some machine c = 0.1, d₀ is about 0, and a target pass over 4 tokens takes 1.3 times as long as one over a "
          "single token. At τ = 3, how many tokens must a step yield on average to break even with the target alone?",
          ["1.3", "1.0", "1.6"],
          2, "A step costs d₀ + τc + T(τ+1)/T(1) = 0 + 0.3 + 1.3 target steps; target-only makes one token per step."),
    ],
    "06": [
        Q("A run at τ = 6 proposed 300 drafts and kept 45 of them; the acceptance rule looked at 150 (the accepted ones "
          "and each step's first rejected one). Which α belongs in the cost model?",
          ["0.15: the kept fraction κ of the run",
           "0.30: accepted drafts over the drafts the rule looked at",
           "0.70: one minus the share of looked-at drafts that were rejected"],
          1, "α counts only the drafts the rule looked at: 45 / 150. κ = 45 / 300 also counts the drafts after each "
             "rejection, which nobody looked at, and 105 / 150 is the rejected share itself."),
        Q("α = 0.6 and τ = 3, positions accepted independently. How many tokens does a step yield on average?",
          ["2.18", "1.80", "2.80"],
          0, "1 + 0.6 + 0.36 + 0.216 = (1 − 0.6⁴)/(1 − 0.6). 1.80 counts only the drafts (3 × 0.6); 2.80 adds the "
             "target's token to 3 × 0.6, as if every position were reached."),
        Q("T(1) = 50 ms, T(3) = 60 ms, d = 6 ms, d₀ and the loop's own work negligible, α = 0.5. What speedup does the "
          "cost model predict at τ = 2?",
          ["1.75x: the tokens per step", "1.46x: E · T(1) / T(3)", "1.22x: E · T(1) / (2d + T(3))"],
          2, "E = 1.75 tokens per step; a step costs 2 × 6 + 60 = 72 ms against 50 ms per token alone: 1.75 × 50 / 72. "
             "Leaving the drafts out overstates it."),
        Q("Costs measured at the start give T(1) = 60 ms; the benchmark's target-only runs then take 50 ms per token. "
          "If the 10 ms gap is booked as a negative loop overhead for target-only tokens while speculative steps keep "
          "their measured costs, every predicted speedup is...",
          ["about 17% too low", "about 17% too high", "unchanged"],
          0, "Target-only tokens are priced at this run's pace (50 ms), the steps at the slower moment's (× 60/50): every "
             "prediction shrinks by 50/60. Scaling the whole cost set to the run's pace keeps the ratios."),
        Q("A server allows 1.6 verified positions per generated token. With α = 0.5, which τ fit the budget?",
          ["none: every step verifies more positions than it yields",
           "τ = 1 and τ = 2",
           "τ = 1 only"],
          2, "(τ + 1) / E: τ = 1 spends 2 / 1.5 = 1.33, τ = 2 spends 3 / 1.75 = 1.71 > 1.6."),
        Q("T(1) = 40 ms and α = 0.7. A τ = 4 step costs 70 ms and yields 2.77 tokens on average; a τ = 1 step costs "
          "48 ms and yields 1.7. A chat product must update the screen at least every 60 ms. Which setting?",
          ["τ = 4: the least time per token of the three",
           "τ = 1: its steps fit the bound and beat the target alone",
           "the target alone: any drafting lengthens the wait"],
          1, "A step shows its tokens when its verification ends, so τ = 4 leaves 70 ms silences; τ = 1 waits at most "
             "48 ms and still spends 28 ms per token against 40."),
        Q("You swap the roles: the 135M target proposes, the course's small draft verifies (greedy). What do you get?",
          ["the target's greedy text, at the draft's speed",
           "the draft's greedy text, slower than the draft alone",
           "a mix of the two models' greedy texts"],
          1, "The verifier's greedy choice is the output, so it is the draft's text; and each proposed token costs a "
             "target pass, many times a draft pass, so the swap is slower than the draft alone."),
    ],
    "07": [
        Q("A benchmark prints: best fixed τ = 2 at 1.18x, the cost-model policy at 1.12x, and the target alone at "
          "14.1 tokens/s at the start of the run and 11.0 at the end. What does this run show about the two?",
          ["The cost-model policy is about 5% slower than the best fixed τ",
           "Nothing about their order: 5% is well inside the run's drift",
           "The cost-model policy has not yet learned α on these prompts"],
          1, "The target alone changed speed by about 25% during the run; a 5% difference between two rows cannot be "
             "told from that drift. Re-run in turns, or longer, before ranking them."),
        Q("A product bounds every gap between tokens at 90 ms. With the machine's tail factor, τ = 1 predicts a "
          "104 ms step and the target alone 74 ms. What should the latency-capped policy do?",
          ["Run τ = 1 anyway, since one draft token is the smallest step",
           "Raise the bound to 104 ms so that at least τ = 1 fits",
           "Run the target alone (τ = 0) while no τ ≥ 1 fits the bound"],
          2, "τ = 0 drafts nothing: each step is one target pass, which fits, and the output is still the target's. "
             "The bound is the product's promise, not the policy's to move."),
        Q("Runs A (τ = 1) and B (τ = 6) reach the same tokens per second on one prompt. Which is likely to have the "
          "larger 95th-percentile gap between tokens?",
          ["B: its tokens come in bursts, a whole long step apart",
           "A: it makes more target passes, and each pass is a gap",
           "Neither: the same throughput means the same gaps"],
          0, "A step's tokens arrive together when it ends; B's steps are longer, so its silences are longer."),
        Q("The trace shows 4 target passes per step at τ = 3 and a normal T(4)/T(1). The cause is...",
          ["slow kernels on the target", "a draft reading a different prompt", "verification token by token"],
          2, "One pass per draft plus the bonus position: the parallel pass was lost."),
        Q("Put one step in order: (1) correct, (2) draft τ tokens, (3) roll back both caches, (4) verify in one pass, "
          "(5) accept the longest run.",
          ["2, 4, 5, 1, 3", "2, 5, 4, 1, 3", "4, 2, 5, 3, 1"],
          0, "Draft, verify, accept, correct, then roll the caches back to the kept tokens."),
        Q("A new release is 10% faster, and its traces show the target's cache holding more tokens than were kept after "
          "every step. What do you check first?",
          ["Whether α rose on these prompts with the new release's draft",
           "Whether T(k)/T(1) fell with a new kernel on this CPU",
           "Whether the output still equals the target's greedy one"],
          2, "A cache that is not rolled back lets the target read rejected drafts: fast and possibly wrong. The "
             "lossless check decides; speed and α say nothing about correctness."),
    ],
    "08": [
        Q("A draft with α = 0.1 costs c = 0.01 on a CPU where v(1) = T(2)/T(1) = 1.15. What speedup can τ = 1 give?",
          ["Below 1: the 2-token pass costs more than the 0.1 token gained",
           "About 1.1x, since a draft this cheap adds almost nothing to a step",
           "About 10x, since the draft is a hundred times cheaper than the target"],
          0, "E = 1 + 0.1 = 1.1 tokens per step, at a cost of 0.01 + 1.15 = 1.16 target steps: 1.1 / 1.16 ≈ 0.95."),
        Q("Which of these can serve as a draft for SmolLM2-135M-Instruct?",
          ["A 2-layer model of another family, with its own tokenizer",
           "A larger model of another family, for a higher α",
           "A fresh 1-layer model that uses SmolLM2's own tokenizer"],
          2, "The target must score the draft's token ids, so both must mean the same tokens; size and family do not "
             "matter for correctness."),
        Q("With α = 0.5 and τ = 3, how many tokens does one step yield on average (independent positions)?",
          ["1.875", "1.5", "2.5"],
          0, "(1 − 0.5⁴) / (1 − 0.5) = 0.9375 / 0.5 = 1.875."),
        Q("The draft scores only the 8,192 tokens the target uses most. The target's next token is not among them. "
          "What happens?",
          ["The output differs from the target's own output at that position",
           "That draft is rejected and the target's correction supplies the token",
           "An error is raised, because the draft cannot represent the token"],
          1, "Only α and c change with the subset: the target verifies every draft and its correction can be any token."),
        Q("You want to know whether self-instruct requests make a better draft than templated prompts. Which "
          "comparison can tell?",
          ["The shipped draft's α against an older design's α from its model card",
           "One draft's agreement on its own training answers and on new ones",
           "Two copies of one early exit, trained alike on either prompt set"],
          2, "Only a like-with-like run isolates the data: the two course drafts also differ in architecture, "
             "initialisation and amount of data, and a train/eval gap measures memorisation, not the data's source."),
    ],
    "09": [
        Q("Prompt lookup proposes ŷ, and at that position the target gives it p(ŷ) = 0.3. Sampling at temperature 1, "
          "what does the step put at that position?",
          ["ŷ every time: its q(ŷ) = 1, so min(1, p/q) is 1",
           "ŷ 30% of the time; else a draw from p without ŷ, renormalised",
           "ŷ 30% of the time; else a draw from p itself, ŷ included"],
          1, "Accepted with min(1, p(ŷ)/q(ŷ)) = p(ŷ) = 0.3; after a rejection the residual norm(max(0, p − q)) is p "
             "with ŷ removed, renormalised. Drawing from p itself would emit ŷ more often than p(ŷ)."),
        Q("Prompt lookup makes one prompt much faster and another hardly at all. What differs between them?",
          ["The machine's T(k) curve, which changes with the prompt's length and its vocabulary",
           "The target's temperature, which prompt lookup needs to be exactly zero",
           "How much of the answer repeats text already in the context"],
          2, "It can only propose what already occurred: summaries and rewrites copy long stretches, open questions do not."),
        Q("The target's 4-bit copy agrees with it on nearly every token and costs c = 0.5. Even with α = 1 and free "
          "verification (T(k) = T(1)), its speedup stays...",
          ["below 2x, however large τ is", "near 5x at τ = 8, since every draft is kept",
           "unbounded, since α = 1 keeps every draft"],
          0, "(τ + 1) / (τ · 0.5 + 1) < 2 for every τ: each drafted token costs half a target pass."),
        Q("An int8 copy (a grid of its own, not the target's) and the 4-bit copy both agree with the target at all 16 "
          "positions of one answer. What may you conclude?",
          ["That int8 is as exact as the 4-bit copy on any text",
           "Little: only near ties can flip, and 16 positions may hold none",
           "That int8's weights were rounded back onto the 4-bit grid"],
          1, "Agreement counts argmax flips, which only a near tie between the target's two best tokens allows. The 4-bit "
             "copy holds the target's own weights (only its arithmetic rounds differently); int8 changes the weights, "
             "so over enough positions its agreement can fall. Measure on far more positions before choosing."),
        Q("Two-level drafting, inner_tau = 3: the copy accepts the small draft's guesses with α = 0.5, its pass over 4 "
          "tokens costs 1.8 of its one-token passes, and a small-draft step 0.1. Against the copy drafting alone, a "
          "drafted token...",
          ["costs more: about 1.9 tokens per pass pay for 1.8 + 0.3 passes",
           "costs about a third, since the copy checks 3 guesses per pass",
           "costs the same, since the target sees the copy's own tokens"],
          0, "Each copy pass yields E = (1 − 0.5⁴)/(1 − 0.5) ≈ 1.9 tokens and costs 1.8 + 3 · 0.1 = 2.1 one-token passes "
             "of the copy: about 1.1 per drafted token, more than the 1.0 of the copy alone. Two-level drafting pays "
             "when the copy's T(k) is flat or the small draft agrees with it more often."),
        Q("A drafter sits in the grey region of the α-c plane, below the 1.0 contour. What does that mean?",
          ["Its output is no longer the target's own greedy output, token for token",
           "No τ is predicted to make decoding faster than the target alone",
           "Its α was measured on too few prompts for the point to be trusted"],
          1, "The contours are the cost model's best speedup over τ for your T(k). Every drafter stays lossless."),
    ],
    "10": [
        Q("A tree: nodes 0 and 1 under the root, node 2 under node 0, node 3 under node 1 (batch order 0, 1, 2, 3). "
          "Which positions does node 3's row of the tree mask let it attend to?",
          ["The prefix and nodes 0, 1, 2 and 3",
           "The prefix, node 1 and node 3",
           "The prefix, nodes 0 and 1, and node 3"],
          1, "Only its own path: then its logits are exactly those of its path fed alone after the prefix. A sibling or "
             "a cousin is another continuation, not context."),
        Q("Two siblings at depth 2 sit at batch indices 3 and 5 of the tree pass, after a prefix of n tokens. Their "
          "position ids are...",
          ["n + 1 for both", "n + 3 and n + 5", "n + 2 and n + 3"],
          0, "A node's position is n + depth − 1: both continue the prefix as its second new token, whatever their index."),
        Q("After a prefix of 20 tokens, a 6-node tree pass leaves 26 entries in the target's cache, and the walk accepts "
          "nodes 1 and 4 (depths 1 and 2). What does the cache hold after the step?",
          ["26 entries: the refused nodes stay, masked out in later passes",
           "22 entries: the prefix, then nodes 1 and 4 right after it",
           "20 entries: the accepted tokens are read again next step"],
          1, "compact_cache moves the accepted path's keys and values right after the prefix and cuts the rest off; "
             "the result equals a recomputation over the prefix and the path."),
        Q("Under sampling, a node has two children with guesses g₁ and g₂. g₁ is refused. With what probability is g₂ "
          "then accepted?",
          ["p(g₂)", "p(g₂) / (1 − p(g₁))", "min(1, p(g₂) / q(g₂))"],
          1, "A refused guess leaves the distribution: g₂ is accepted with p(g₂) over the mass not yet refused, so "
             "overall it is emitted with probability (1 − p(g₁)) · p(g₂)/(1 − p(g₁)) = p(g₂)."),
        Q("A 16-node tree grown a node at a time keeps 1.8 tokens per pass and runs slower than the target alone. A draft "
          "pass costs 0.1 T(1) and T(17) = 1.3 T(1). Which change is most likely to make that tree pay?",
          ["Grow it a level at a time, in 3 draft passes instead of 16",
           "Sample at temperature 1, so that more siblings are accepted",
           "Widen the root to 8 children, where the draft is least sure"],
          0, "The step costs passes · d + T(nodes + 1): 16 · 0.1 + 1.3 = 2.9 T(1) a node at a time (1.8/2.9: 0.62x), "
             "3 · 0.1 + 1.3 = 1.6 T(1) by levels (1.8/1.6: 1.13x). Sampling and a wider root change the tokens per "
             "pass, not the draft passes that make the step dear."),
    ],
}


def quiz_for(notebook: str) -> Quiz:
    """The quiz of notebook ``notebook`` ("00" … "10")."""
    if notebook not in QUIZZES:
        raise ValueError(f"no quiz for notebook {notebook!r}; there are quizzes for {', '.join(QUIZZES)}")
    return Quiz(f"Notebook {notebook}", QUIZZES[notebook])
