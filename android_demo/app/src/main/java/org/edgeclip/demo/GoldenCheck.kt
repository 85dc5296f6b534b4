package org.edgeclip.demo

import java.io.File
import java.util.Locale
import kotlin.math.abs
import kotlin.math.sqrt
import org.edgeclip.core.Json
import org.edgeclip.core.ZeroShot

/**
 * The on-device proof that the glue is right: golden.png and the captions of golden.json go
 * through the real models (decoding, the core's preprocessing and tokenizer, ExecuTorch) and the
 * results are compared with PyTorch's, stored in golden.json by edgeclip's exporter.
 */
object GoldenCheck {
    class Report(val passed: Boolean, val text: String)

    /** The least cosine to PyTorch's embeddings that each precision must reach. */
    fun minCosine(precision: String): Double = when (precision) {
        "fp32" -> 0.9999
        "fp16" -> 0.999
        else -> 0.99 // int8
    }

    fun run(clip: ClipEngine): Report {
        val dir = clip.dir
        val goldenFile = File(dir, "golden.json")
        if (!goldenFile.isFile) return Report(false, "$goldenFile: missing (export with a current edgeclip)")
        val golden = Json.asObject(Json.parse(goldenFile), "golden.json")
        val precision = clip.image.manifest.precision
        val minCos = minCosine(precision)
        val lines = mutableListOf("${dir.name} ($precision): cosine must be ≥ $minCos")
        var passed = true
        fun verify(ok: Boolean, line: String) {
            passed = passed && ok
            lines += (if (ok) "ok   " else "FAIL ") + line
        }

        // The image: decoded untouched, preprocessed by the core, embedded by the image tower.
        val imageSpec = golden["image"]
        val imageName = if (imageSpec is Map<*, *> && imageSpec["file"] is String) imageSpec["file"] as String else "golden.png"
        val bitmap = ClipEngine.decodeExact(File(dir, imageName))
        val imageEmbedding = clip.embedImage(bitmap)
        val imageCos = cosine(imageEmbedding, Json.asFloatArray(Json.require(golden, "image_embedding", "golden.json"), "image_embedding"))
        verify(imageCos >= minCos, String.format(Locale.US, "image %s: cosine %.6f", imageName, imageCos))

        // Each caption: the core's token ids must be Python's exactly; then the text tower.
        val captions = Json.asList(Json.require(golden, "captions", "golden.json"), "captions")
        for ((i, item) in captions.withIndex()) {
            val caption = Json.asObject(item, "captions[$i]")
            val text = Json.asString(Json.require(caption, "text", "captions[$i]"), "captions[$i].text")
            val expectedIds = Json.asLongArray(Json.require(caption, "ids", "captions[$i]"), "captions[$i].ids")
            val ids = clip.tokenizer.tokenize(text)
            verify(ids.contentEquals(expectedIds), "tokens of \"$text\"" + if (ids.contentEquals(expectedIds)) "" else
                ": ${ids.take(12)}… vs Python's ${expectedIds.take(12)}…")
            val cos = cosine(clip.text.embed(ids), Json.asFloatArray(Json.require(caption, "embedding", "captions[$i]"), "captions[$i].embedding"))
            verify(cos >= minCos, String.format(Locale.US, "text \"%s\": cosine %.6f", text, cos))
        }

        // Zero-shot on the golden image with golden.json's labels and templates.
        val zs = golden["zero_shot"]
        if (zs != null) {
            val z = Json.asObject(zs, "zero_shot")
            val labels = Json.asList(Json.require(z, "labels", "zero_shot"), "zero_shot.labels").map { it as String }
            val templates = Json.asList(Json.require(z, "templates", "zero_shot"), "zero_shot.templates").map { it as String }
            val scale = if (z.containsKey("logit_scale")) Json.asDouble(z["logit_scale"], "zero_shot.logit_scale") else clip.logitScale
            val expectedScores = Json.asFloatArray(Json.require(z, "scores", "zero_shot"), "zero_shot.scores")
            val expectedRanking = Json.asLongArray(Json.require(z, "ranking", "zero_shot"), "zero_shot.ranking").map { it.toInt() }
            val scores = ZeroShot.build(labels, templates, clip.tokenizer, clip.textEncoder, scale).scores(imageEmbedding)
            val ranking = ZeroShot.ranking(scores).toList()
            val maxDiff = (0 until minOf(scores.size, expectedScores.size)).maxOfOrNull { abs(scores[it] - expectedScores[it]) } ?: 0f
            verify(ranking.firstOrNull() == expectedRanking.firstOrNull(),
                "zero-shot best label: ${labels[ranking[0]]} (PyTorch: ${labels[expectedRanking[0]]})")
            lines += "info zero-shot full ranking " + (if (ranking == expectedRanking) "identical" else
                "differs: ${ranking.map { labels[it] }} vs ${expectedRanking.map { labels[it] }}") +
                String.format(Locale.US, "; largest score difference %.4f", maxDiff)
        }
        lines += if (passed) "PASSED" else "FAILED"
        return Report(passed, lines.joinToString("\n"))
    }

    fun cosine(a: FloatArray, b: FloatArray): Double {
        require(a.size == b.size) { "embeddings of ${a.size} and ${b.size} values" }
        var dot = 0.0
        var na = 0.0
        var nb = 0.0
        for (i in a.indices) {
            dot += a[i].toDouble() * b[i]
            na += a[i].toDouble() * a[i]
            nb += b[i].toDouble() * b[i]
        }
        return dot / (sqrt(na) * sqrt(nb) + 1e-30)
    }
}
