//! The backward passes: under autodiff each fused operation is one tracked operation whose
//! gradient is written out (see the formulas in the crate documentation), instead of the
//! chain of tracked operations burn would compose.
//!
//! Saved state is what the formula needs and no more: softmax keeps its output, GELU and
//! SwiGLU their inputs, a product the operand the other's gradient needs, and the training
//! attention its inputs only (it computes the probabilities and the dropout mask again).

use burn::backend::Backend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;

use crate::backend::FusedOps;
use crate::composed;

impl<B: FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // The backward pass needs the probabilities: keep the output.
        tracked_unary::<B, C>(x, B::softmax_last, B::softmax_last_backward, Saved::Output)
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_binary::<B, C>(gate, up, B::swiglu, swiglu_grads::<B>)
    }

    fn geglu_tanh(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_binary::<B, C>(gate, up, B::geglu_tanh, geglu_tanh_grads::<B>)
    }

    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_unary::<B, C>(x, B::gelu_erf, B::gelu_erf_backward, Saved::Input)
    }

    fn bias_gelu(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_binary::<B, C>(x, bias, B::bias_gelu, bias_gelu_grads::<B>)
    }

    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct RmsNorm;

        impl<B: FusedOps> Backward<B, 2> for RmsNorm {
            type State = (FloatTensor<B>, FloatTensor<B>, f64); // x, weight, eps

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let [x_node, weight_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x, weight, eps) = ops.state;
                if let Some(node) = weight_node {
                    grads.register::<B>(
                        node.id,
                        B::rms_norm_backward_weight(x.clone(), grad.clone(), eps),
                    );
                }
                if let Some(node) = x_node {
                    grads.register::<B>(node.id, B::rms_norm_backward_x(x, weight, grad, eps));
                }
            }
        }

        match RmsNorm.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.into_primitive(), weight.into_primitive());
                let output = B::rms_norm(x.clone(), weight.clone(), eps);
                prep.finish((x, weight, eps), output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::rms_norm(x.into_primitive(), weight.into_primitive(), eps))
            }
        }
    }

    fn layer_norm_affine(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct LayerNorm;

        impl<B: FusedOps> Backward<B, 3> for LayerNorm {
            type State = (FloatTensor<B>, FloatTensor<B>, f64); // x, gamma, eps

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let [x_node, gamma_node, beta_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x, gamma, eps) = ops.state;
                if let Some(node) = beta_node {
                    grads.register::<B>(node.id, composed::sum_over_rows::<B>(grad.clone()));
                }
                if let Some(node) = gamma_node {
                    grads.register::<B>(
                        node.id,
                        B::layer_norm_backward_gamma(x.clone(), grad.clone(), eps),
                    );
                }
                if let Some(node) = x_node {
                    grads.register::<B>(node.id, B::layer_norm_backward_x(x, gamma, grad, eps));
                }
            }
        }

        match LayerNorm
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, gamma, beta) =
                    (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
                let output = B::layer_norm_affine(x.clone(), gamma.clone(), beta, eps);
                prep.finish((x, gamma, eps), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::layer_norm_affine(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                eps,
            )),
        }
    }

    fn rotary(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Rotary;

        impl<B: FusedOps> Backward<B, 1> for Rotary {
            type State = (FloatTensor<B>, FloatTensor<B>); // cos, sin

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let [parent] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(parent) = parent {
                    let (cos, sin) = ops.state;
                    grads.register::<B>(parent.id, B::rotary_backward(grad, cos, sin));
                }
            }
        }

        // cos and sin are constants of the pass (built from positions), not tracked inputs.
        let (cos, sin) = (cos.into_primitive(), sin.into_primitive());
        match Rotary.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let output = B::rotary(x.into_primitive(), cos.clone(), sin.clone());
                prep.finish((cos, sin), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rotary(x.into_primitive(), cos, sin)),
        }
    }

    fn attention_dropout(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
        keep: f64,
        seed: u64,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AttentionDropout {
            scale: f64,
            keep: f64,
            seed: u64,
        }

        impl<B: FusedOps> Backward<B, 3> for AttentionDropout {
            type State = [FloatTensor<B>; 4]; // q, k, v, bias

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let grad = grads.consume::<B>(&ops.node);
                let [q, k, v, bias] = ops.state;
                let (dq, dk, dv) = B::attention_dropout_backward(
                    q, k, v, bias, grad, self.scale, self.keep, self.seed,
                );
                for (parent, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
                    if let Some(parent) = parent {
                        grads.register::<B>(parent.id, grad);
                    }
                }
            }
        }

        // The bias is the padding mask: data, not a tracked input.
        let bias = bias.into_primitive();
        let op = AttentionDropout { scale, keep, seed };
        match op.prepare::<C>([q.node(), k.node(), v.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
                let output = B::attention_dropout(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    bias.clone(),
                    scale,
                    keep,
                    seed,
                );
                prep.finish([q, k, v, bias], output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::attention_dropout(
                q.into_primitive(),
                k.into_primitive(),
                v.into_primitive(),
                bias,
                scale,
                keep,
                seed,
            )),
        }
    }

    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
        window: usize,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct CausalAttention {
            scale: f64,
            window: usize,
        }

        impl<B: FusedOps> Backward<B, 3> for CausalAttention {
            type State = [FloatTensor<B>; 4]; // q, k, v, bias

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let grad = grads.consume::<B>(&ops.node);
                let [q, k, v, bias] = ops.state;
                let (dq, dk, dv) =
                    B::causal_attention_backward(q, k, v, bias, grad, self.scale, self.window);
                for (parent, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
                    if let Some(parent) = parent {
                        grads.register::<B>(parent.id, grad);
                    }
                }
            }
        }

        // The bias is the padding mask: data, not a tracked input.
        let bias = bias.into_primitive();
        let op = CausalAttention { scale, window };
        match op.prepare::<C>([q.node(), k.node(), v.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
                let output = B::causal_attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    bias.clone(),
                    scale,
                    window,
                );
                prep.finish([q, k, v, bias], output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::causal_attention(
                q.into_primitive(),
                k.into_primitive(),
                v.into_primitive(),
                bias,
                scale,
                window,
            )),
        }
    }

    fn linear_layer(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_product::<B, C>(x, weight, B::linear_layer)
    }

    fn quantized_linear(
        x: FloatTensor<Self>,
        weight: crate::quant::QuantWeight,
    ) -> FloatTensor<Self> {
        /// The weight is frozen: only the input gets a gradient, `dx = dy W`.
        #[derive(Debug)]
        struct QuantizedLinear(crate::quant::QuantWeight);

        impl<B: FusedOps> Backward<B, 1> for QuantizedLinear {
            type State = ();

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let [parent] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(parent) = parent {
                    grads.register::<B>(parent.id, B::quantized_linear_backward(grad, self.0));
                }
            }
        }

        match QuantizedLinear(weight.clone()).prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                prep.finish((), B::quantized_linear(x.into_primitive(), weight))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::quantized_linear(x.into_primitive(), weight))
            }
        }
    }

    fn linear_layer_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct LinearBias;

        impl<B: FusedOps> Backward<B, 3> for LinearBias {
            type State = ProductSaved<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let [x_node, weight_node, bias_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(node) = bias_node {
                    grads.register::<B>(node.id, composed::sum_over_rows::<B>(grad.clone()));
                }
                ops.state.register_grads(
                    [x_node, weight_node].map(|n| n.map(|n| n.id)),
                    grad,
                    grads,
                    B::linear_layer,
                );
            }
        }

        let tracked = [x.is_tracked(), weight.is_tracked()];
        match LinearBias
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.into_primitive(), weight.into_primitive());
                prep.finish(
                    ProductSaved::new(&x, &weight, tracked),
                    B::linear_layer_bias(x, weight, bias.into_primitive()),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(B::linear_layer_bias(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }

    fn batched_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_product::<B, C>(a, b, B::batched_matmul)
    }

    fn token_nll(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct TokenNll;

        impl<B: FusedOps> Backward<B, 1> for TokenNll {
            type State = (FloatTensor<B>, FloatTensor<B>); // logits, targets

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let [parent] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(parent) = parent {
                    let (logits, targets) = ops.state;
                    grads.register::<B>(parent.id, B::token_nll_backward(logits, targets, grad));
                }
            }
        }

        // The targets are data, not a tracked input.
        let targets = targets.into_primitive();
        match TokenNll.prepare::<C>([logits.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let logits = logits.into_primitive();
                let output = B::token_nll(logits.clone(), targets.clone());
                prep.finish((logits, targets), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::token_nll(logits.into_primitive(), targets)),
        }
    }
}

/// What the backward pass of a product `lhs rhs` keeps: `lhs` when `rhs` needs a gradient,
/// `rhs` when `lhs` does.
#[derive(Debug, Clone)]
struct ProductSaved<B: Backend> {
    lhs: Option<FloatTensor<B>>,
    rhs: Option<FloatTensor<B>>,
}

impl<B: FusedOps> ProductSaved<B> {
    /// `tracked`: whether `lhs` and `rhs` need gradients.
    fn new(
        lhs: &FloatTensor<B>,
        rhs: &FloatTensor<B>,
        [lhs_tracked, rhs_tracked]: [bool; 2],
    ) -> Self {
        Self { lhs: rhs_tracked.then(|| lhs.clone()), rhs: lhs_tracked.then(|| rhs.clone()) }
    }

    /// `dlhs = dy rhs^T` and `drhs = lhs^T dy` for the parents that are tracked, by `product`
    /// (the forward operation) on views transposed in their last two axes.
    fn register_grads(
        self,
        [lhs_node, rhs_node]: [Option<NodeId>; 2],
        grad: FloatTensor<B>,
        grads: &mut Gradients,
        product: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
    ) {
        if let (Some(node), Some(lhs)) = (rhs_node, self.lhs) {
            grads.register::<B>(node, product(B::float_transpose(lhs), grad.clone()));
        }
        if let (Some(node), Some(rhs)) = (lhs_node, self.rhs) {
            grads.register::<B>(node, product(grad, B::float_transpose(rhs)));
        }
    }
}

/// The backward step of a product `lhs rhs` that `product` computes (and computes again, on
/// transposed views, for the gradients).
#[derive(Debug)]
struct ProductBackward<B: Backend> {
    product: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
}

impl<B: FusedOps> Backward<B, 2> for ProductBackward<B> {
    type State = ProductSaved<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        ops.state.register_grads(ops.parents.map(|n| n.map(|n| n.id)), grad, grads, self.product);
    }
}

/// `product(lhs, rhs)` as one tracked operation.
fn tracked_product<B: FusedOps, C: CheckpointStrategy>(
    lhs: FloatTensor<Autodiff<B, C>>,
    rhs: FloatTensor<Autodiff<B, C>>,
    product: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    let tracked = [lhs.is_tracked(), rhs.is_tracked()];
    match (ProductBackward { product })
        .prepare::<C>([lhs.node(), rhs.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (lhs, rhs) = (lhs.into_primitive(), rhs.into_primitive());
            prep.finish(ProductSaved::new(&lhs, &rhs, tracked), product(lhs, rhs))
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(product(lhs.into_primitive(), rhs.into_primitive()))
        }
    }
}

/// Which tensor a one-input operation keeps for its backward pass.
#[derive(Debug, Clone, Copy)]
enum Saved {
    Input,
    Output,
}

/// The backward step of a one-input operation: `backward(saved, dy)` gives `dx`.
#[derive(Debug)]
struct UnaryBackward<B: Backend> {
    backward: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
}

impl<B: Backend> Backward<B, 1> for UnaryBackward<B> {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(parent) = parent {
            grads.register::<B>(parent.id, (self.backward)(ops.state, grad));
        }
    }
}

/// `forward(x)` as one tracked operation whose gradient is `backward(saved, dy)`.
fn tracked_unary<B: FusedOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    forward: fn(FloatTensor<B>) -> FloatTensor<B>,
    backward: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
    saved: Saved,
) -> FloatTensor<Autodiff<B, C>> {
    match (UnaryBackward { backward }).prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let x = x.into_primitive();
            let (state, output) = match saved {
                Saved::Input => (x.clone(), forward(x)),
                Saved::Output => {
                    let output = forward(x);
                    (output.clone(), output)
                }
            };
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive())),
    }
}

/// The gradients of a two-input operation's tracked inputs (`tracked`) from both inputs and `dy`.
type BinaryGrads<B> =
    fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, [bool; 2]) -> [Option<FloatTensor<B>>; 2];

/// The backward step of a two-input operation that keeps both inputs.
#[derive(Debug)]
struct BinaryBackward<B: Backend> {
    grads: BinaryGrads<B>,
}

impl<B: Backend> Backward<B, 2> for BinaryBackward<B> {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (a, b) = ops.state;
        let tracked = ops.parents.each_ref().map(|parent| parent.is_some());
        for (parent, grad) in ops.parents.into_iter().zip((self.grads)(a, b, grad, tracked)) {
            if let (Some(parent), Some(grad)) = (parent, grad) {
                grads.register::<B>(parent.id, grad);
            }
        }
    }
}

/// `forward(a, b)` as one tracked operation that keeps both inputs for `grads`.
fn tracked_binary<B: FusedOps, C: CheckpointStrategy>(
    a: FloatTensor<Autodiff<B, C>>,
    b: FloatTensor<Autodiff<B, C>>,
    forward: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
    grads: BinaryGrads<B>,
) -> FloatTensor<Autodiff<B, C>> {
    match (BinaryBackward { grads }).prepare::<C>([a.node(), b.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (a, b) = (a.into_primitive(), b.into_primitive());
            let output = forward(a.clone(), b.clone());
            prep.finish((a, b), output)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(a.into_primitive(), b.into_primitive())),
    }
}

/// SwiGLU's gradients with respect to `gate` and `up`.
fn swiglu_grads<B: FusedOps>(
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
    grad: FloatTensor<B>,
    [gate_tracked, up_tracked]: [bool; 2],
) -> [Option<FloatTensor<B>>; 2] {
    let d_up = up_tracked.then(|| B::swiglu_backward_up(gate.clone(), grad.clone()));
    let d_gate = gate_tracked.then(|| B::swiglu_backward_gate(gate, up, grad));
    [d_gate, d_up]
}

/// GeGLU's gradients with respect to `gate` and `up`.
fn geglu_tanh_grads<B: FusedOps>(
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
    grad: FloatTensor<B>,
    [gate_tracked, up_tracked]: [bool; 2],
) -> [Option<FloatTensor<B>>; 2] {
    let d_up = up_tracked.then(|| B::geglu_tanh_backward_up(gate.clone(), grad.clone()));
    let d_gate = gate_tracked.then(|| B::geglu_tanh_backward_gate(gate, up, grad));
    [d_gate, d_up]
}

/// `gelu(x + bias)`'s gradients with respect to `x` and `bias` (the first summed over rows).
fn bias_gelu_grads<B: FusedOps>(
    x: FloatTensor<B>,
    bias: FloatTensor<B>,
    grad: FloatTensor<B>,
    [x_tracked, bias_tracked]: [bool; 2],
) -> [Option<FloatTensor<B>>; 2] {
    let d_pre = B::bias_gelu_backward(x, bias, grad); // the gradient of x + bias
    let d_bias = bias_tracked.then(|| composed::sum_over_rows::<B>(d_pre.clone()));
    [x_tracked.then_some(d_pre), d_bias]
}
