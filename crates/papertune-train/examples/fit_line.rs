//! The trainer with a model and a loss of your own: a two-feature logistic regression with a
//! hand-written hinge loss, trained on points either side of a line.
//!
//! cargo run -p papertune-train --example fit_line

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use papertune_train::{
    CheckpointContext, Loss, Metrics, SaveKind, TrainConfig, TrainError, TrainHooks, TrainModel,
    TrainProgress, Trainer,
};

#[derive(Module, Debug)]
struct LineClassifier {
    linear: Linear,
}

#[derive(Debug, Clone)]
struct Points {
    xy: Tensor<2>,
    labels: Tensor<1, Int>,
}

impl TrainModel<Points> for LineClassifier {
    type Output = Tensor<2>;
    type Target = Tensor<1, Int>;
    fn forward_train(&self, batch: Points) -> (Tensor<2>, Tensor<1, Int>) {
        (self.linear.forward(batch.xy), batch.labels)
    }
}

/// Hinge loss on one score: mean(max(0, 1 - s·y)) with y in {-1, +1}.
struct Hinge;

impl Loss<Tensor<2>, Tensor<1, Int>> for Hinge {
    fn forward(&self, scores: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
        let [n, _] = scores.dims();
        let signs = labels.float().mul_scalar(2.0).sub_scalar(1.0);
        (scores.reshape([n]) * signs).neg().add_scalar(1.0).clamp_min(0.0).mean()
    }
}

#[derive(Clone)]
struct PointBatcher;

impl Batcher<([f32; 2], u8), Points> for PointBatcher {
    fn batch(&self, items: Vec<([f32; 2], u8)>, device: &Device) -> Points {
        let n = items.len();
        let xy: Vec<f32> = items.iter().flat_map(|(p, _)| *p).collect();
        let labels: Vec<i64> = items.iter().map(|(_, l)| i64::from(*l)).collect();
        Points {
            xy: Tensor::from_data(TensorData::new(xy, [n, 2]), device),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

/// Accuracy on the training points; keeps nothing on disk.
struct Hooks {
    points: Vec<([f32; 2], u8)>,
    device: Device,
}

impl TrainHooks<LineClassifier> for Hooks {
    fn evaluate(
        &mut self,
        model: &LineClassifier,
        _: &TrainProgress,
    ) -> Result<Metrics, TrainError> {
        let batch = PointBatcher.batch(self.points.clone(), &self.device);
        let scores = model.linear.forward(batch.xy).try_into_vec_as::<f32>().expect("floats");
        let correct =
            scores.iter().zip(&self.points).filter(|(s, (_, l))| (**s > 0.0) == (*l == 1)).count();
        Ok(Metrics::from([("accuracy".to_owned(), correct as f64 / self.points.len() as f64)]))
    }
    fn save(
        &mut self,
        _: &LineClassifier,
        _: SaveKind,
        _: &CheckpointContext<'_>,
    ) -> Result<(), TrainError> {
        Ok(())
    }
}

fn main() -> Result<(), TrainError> {
    // Points on a grid, labelled by the side of the line y = 0.5·x + 0.1.
    let points: Vec<([f32; 2], u8)> = (0..400)
        .map(|i| {
            let (x, y) = ((i % 20) as f32 / 10.0 - 1.0, (i / 20) as f32 / 10.0 - 1.0);
            ([x, y], u8::from(y > 0.5 * x + 0.1))
        })
        .collect();
    let device = Device::flex();
    let model = LineClassifier { linear: LinearConfig::new(2, 1).init(&device.clone().autodiff()) };
    let config = TrainConfig {
        epochs: 5,
        batch_size: 20,
        lr: 0.1,
        weight_decay: 0.0,
        warmup_ratio: 0.0,
        metric_for_best: "accuracy".into(),
        ..TrainConfig::default()
    };
    let trainer = Trainer::new(config, &device.clone().autodiff())?.with_progress(false);
    let mut hooks = Hooks { points: points.clone(), device: device.clone() };
    let (_, summary) =
        trainer.fit(model, &Hinge, &InMemDataset::new(points), &PointBatcher, &mut hooks)?;
    println!(
        "{} steps, final loss {:.4}, best accuracy {:.3}",
        summary.steps,
        summary.final_loss,
        summary.best.unwrap().0
    );
    Ok(())
}
