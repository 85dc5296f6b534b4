package org.edgeclip.core;

import java.util.ArrayList;
import java.util.List;

/**
 * Zero-shot classification as open_clip does it: each class embedding is the mean of its
 * prompt embeddings (one per template, each L2-normalised), L2-normalised again; a class's
 * score is logitScale · dot(image embedding, class embedding).
 *
 * <p>Sums run in double and results are returned as float; scores agree with PyTorch's
 * float32 to about 1e-6 relative.
 */
public final class ZeroShot {
    /** Embeds token ids (from {@link ClipTokenizer#tokenize}): the app's ExecuTorch/Core ML text tower, or a stub in tests. */
    public interface TextEncoder {
        float[] embed(long[] tokens);
    }

    /** One ranked class. */
    public static final class Prediction {
        public final int index;
        public final String label;
        public final float score;
        public final double probability;

        public Prediction(int index, String label, float score, double probability) {
            this.index = index;
            this.label = label;
            this.score = score;
            this.probability = probability;
        }

        @Override
        public String toString() {
            return label + " (" + score + ", p=" + probability + ")";
        }
    }

    private final List<String> labels;
    private final float[][] classEmbeddings;
    private final double logitScale;

    /** A classifier from ready class embeddings (one per label, any norm: they are normalised). */
    public ZeroShot(List<String> labels, float[][] classEmbeddings, double logitScale) {
        if (labels.size() != classEmbeddings.length) {
            throw new EdgeclipException(labels.size() + " labels but " + classEmbeddings.length + " class embeddings");
        }
        this.labels = new ArrayList<>(labels);
        this.classEmbeddings = new float[classEmbeddings.length][];
        for (int i = 0; i < classEmbeddings.length; i++) {
            this.classEmbeddings[i] = l2Normalize(classEmbeddings[i]);
        }
        this.logitScale = logitScale;
    }

    /** Embeds every label with every template through {@code encoder} and builds the classifier. */
    public static ZeroShot build(List<String> labels, List<String> templates, ClipTokenizer tokenizer,
            TextEncoder encoder, double logitScale) {
        float[][] embeddings = new float[labels.size()][];
        for (int i = 0; i < labels.size(); i++) {
            embeddings[i] = classEmbedding(labels.get(i), templates, tokenizer, encoder);
        }
        return new ZeroShot(labels, embeddings, logitScale);
    }

    /** A template with its "{}" (every one) replaced by the label, like str.format with one argument. */
    public static String formatPrompt(String template, String label) {
        return template.replace("{}", label);
    }

    /** One class's embedding: the normalised mean of its normalised prompt embeddings. */
    public static float[] classEmbedding(String label, List<String> templates, ClipTokenizer tokenizer,
            TextEncoder encoder) {
        List<float[]> prompts = new ArrayList<>();
        for (String template : templates) {
            prompts.add(encoder.embed(tokenizer.tokenize(formatPrompt(template, label))));
        }
        return averagePrompts(prompts);
    }

    /** normalize(mean(normalize(e) for e in prompt embeddings)). */
    public static float[] averagePrompts(List<float[]> promptEmbeddings) {
        if (promptEmbeddings.isEmpty()) {
            throw new EdgeclipException("a class needs at least one prompt embedding");
        }
        int dim = promptEmbeddings.get(0).length;
        double[] sum = new double[dim];
        for (float[] e : promptEmbeddings) {
            if (e.length != dim) {
                throw new EdgeclipException("prompt embeddings of different sizes: " + dim + " and " + e.length);
            }
            float[] n = l2Normalize(e);
            for (int i = 0; i < dim; i++) {
                sum[i] += n[i];
            }
        }
        float[] mean = new float[dim];
        for (int i = 0; i < dim; i++) {
            mean[i] = (float) (sum[i] / promptEmbeddings.size());
        }
        return l2Normalize(mean);
    }

    /**
     * v / max(‖v‖, 1e-12), as torch.nn.functional.normalize. Exported towers already
     * normalise, but normalising again is harmless and guards against a tower that does not.
     */
    public static float[] l2Normalize(float[] v) {
        double norm = 0.0;
        for (float x : v) {
            norm += (double) x * x;
        }
        norm = Math.max(Math.sqrt(norm), 1e-12);
        float[] out = new float[v.length];
        for (int i = 0; i < v.length; i++) {
            out[i] = (float) (v[i] / norm);
        }
        return out;
    }

    public List<String> labels() {
        return new ArrayList<>(labels);
    }

    /** logitScale · dot(normalize(image), class) for every class, in label order. */
    public float[] scores(float[] imageEmbedding) {
        float[] image = l2Normalize(imageEmbedding);
        float[] out = new float[classEmbeddings.length];
        for (int c = 0; c < classEmbeddings.length; c++) {
            if (classEmbeddings[c].length != image.length) {
                throw new EdgeclipException("image embedding has " + image.length + " values, class embeddings "
                        + classEmbeddings[c].length + "; the towers are from different models");
            }
            double dot = 0.0;
            for (int i = 0; i < image.length; i++) {
                dot += (double) image[i] * classEmbeddings[c][i];
            }
            out[c] = (float) (logitScale * dot);
        }
        return out;
    }

    /** Class indices, best score first; ties keep the lower index first (a stable sort). */
    public static int[] ranking(float[] scores) {
        int n = scores.length;
        int[] order = new int[n];
        for (int i = 0; i < n; i++) {
            order[i] = i;
        }
        // Insertion sort: stable, simple to port, and class counts are small.
        for (int i = 1; i < n; i++) {
            int current = order[i];
            int j = i - 1;
            while (j >= 0 && scores[order[j]] < scores[current]) {
                order[j + 1] = order[j];
                j--;
            }
            order[j + 1] = current;
        }
        return order;
    }

    /** softmax(scores): probabilities summing to 1, computed stably (max subtracted). */
    public static double[] softmax(float[] scores) {
        double max = Double.NEGATIVE_INFINITY;
        for (float s : scores) {
            max = Math.max(max, s);
        }
        double[] out = new double[scores.length];
        double sum = 0.0;
        for (int i = 0; i < scores.length; i++) {
            out[i] = Math.exp(scores[i] - max);
            sum += out[i];
        }
        for (int i = 0; i < scores.length; i++) {
            out[i] /= sum;
        }
        return out;
    }

    /** The {@code k} best classes for an image embedding, with scores and softmax probabilities. */
    public List<Prediction> topK(float[] imageEmbedding, int k) {
        float[] scores = scores(imageEmbedding);
        double[] probabilities = softmax(scores);
        int[] order = ranking(scores);
        List<Prediction> out = new ArrayList<>();
        for (int i = 0; i < Math.min(k, order.length); i++) {
            int c = order[i];
            out.add(new Prediction(c, labels.get(c), scores[c], probabilities[c]));
        }
        return out;
    }
}
