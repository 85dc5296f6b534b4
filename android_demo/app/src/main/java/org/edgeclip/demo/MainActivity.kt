package org.edgeclip.demo

import android.content.ActivityNotFoundException
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.ImageDecoder
import android.net.Uri
import android.os.Build
import android.os.Bundle
import android.os.SystemClock
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.EditText
import android.widget.ImageView
import android.widget.Spinner
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import java.io.File
import java.util.Locale
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import org.edgeclip.core.ZeroShot

/** Pick or take a photo, type labels, see the top-5 with scores and latency; or run the golden self-check. */
class MainActivity : ComponentActivity() {

    private val worker: ExecutorService = Executors.newSingleThreadExecutor()
    private var exports: List<File> = emptyList()
    private var engine: ClipEngine? = null // touched on the worker thread only
    private var photo: Bitmap? = null

    private lateinit var exportSpinner: Spinner
    private lateinit var statusText: TextView
    private lateinit var photoView: ImageView
    private lateinit var labelsEdit: EditText
    private lateinit var resultText: TextView

    private val pickPhoto = registerForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) work("decoding the photo") { decode(uri) }
    }

    private val takePhoto = registerForActivityResult(ActivityResultContracts.TakePicturePreview()) { bitmap ->
        if (bitmap != null) showPhoto(bitmap)
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        exportSpinner = findViewById(R.id.exportSpinner)
        statusText = findViewById(R.id.statusText)
        photoView = findViewById(R.id.photoView)
        labelsEdit = findViewById(R.id.labelsEdit)
        resultText = findViewById(R.id.resultText)

        findViewById<Button>(R.id.pickButton).setOnClickListener {
            pickPhoto.launch(
                PickVisualMediaRequest.Builder()
                    .setMediaType(ActivityResultContracts.PickVisualMedia.ImageOnly)
                    .build()
            )
        }
        findViewById<Button>(R.id.cameraButton).setOnClickListener {
            try {
                takePhoto.launch(null)
            } catch (e: ActivityNotFoundException) {
                statusText.text = "No camera app on this device."
            }
        }
        findViewById<Button>(R.id.classifyButton).setOnClickListener { classify() }
        findViewById<Button>(R.id.goldenButton).setOnClickListener { goldenCheck() }
        exportSpinner.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) =
                load(exports[position])

            override fun onNothingSelected(parent: AdapterView<*>?) = Unit
        }

        statusText.text = "Looking for export folders…"
        worker.execute {
            val found = Exports.list(this)
            runOnUiThread {
                exports = found
                if (found.isEmpty()) statusText.setText(R.string.no_export)
                exportSpinner.adapter = ArrayAdapter(
                    this, android.R.layout.simple_spinner_dropdown_item, found.map { it.name }
                )
            }
        }
    }

    override fun onDestroy() {
        super.onDestroy()
        worker.execute { engine?.close(); engine = null }
        worker.shutdown()
    }

    private fun load(dir: File) = work("loading ${dir.name}") {
        engine?.close()
        engine = null
        val t0 = SystemClock.elapsedRealtimeNanos()
        val loaded = ClipEngine.open(dir)
        engine = loaded
        val image = loaded.image.manifest
        val text = loaded.text.manifest
        String.format(
            Locale.US, "%s: %s %s, image %s, text %s, D=%d, loaded in %.0f ms",
            dir.name, image.model, image.precision,
            image.inputs[0].shape.contentToString(), text.inputs[0].shape.contentToString(),
            image.embedDim, ms(t0)
        )
    }

    private fun decode(uri: Uri): String {
        val bitmap = if (Build.VERSION.SDK_INT >= 28) {
            // ImageDecoder applies the EXIF orientation; a software bitmap so getPixels() works.
            ImageDecoder.decodeBitmap(ImageDecoder.createSource(contentResolver, uri)) { decoder, info, _ ->
                decoder.allocator = ImageDecoder.ALLOCATOR_SOFTWARE
                decoder.setTargetSampleSize(sampleSize(info.size.width, info.size.height))
            }
        } else {
            val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
            contentResolver.openInputStream(uri).use { BitmapFactory.decodeStream(it, null, bounds) }
            val options = BitmapFactory.Options().apply {
                inSampleSize = sampleSize(bounds.outWidth, bounds.outHeight)
            }
            contentResolver.openInputStream(uri).use { BitmapFactory.decodeStream(it, null, options) }
                ?: throw IllegalArgumentException("cannot decode $uri")
        }
        runOnUiThread { showPhoto(bitmap) }
        return "Photo ${bitmap.width}×${bitmap.height}"
    }

    /** Subsampling that keeps the shortest side at least twice the model's input size (≥ 448 px). */
    private fun sampleSize(width: Int, height: Int): Int {
        var sample = 1
        while (minOf(width, height) / (sample * 2) >= 448) sample *= 2
        return sample
    }

    private fun showPhoto(bitmap: Bitmap) {
        photo = bitmap
        photoView.setImageBitmap(bitmap)
        resultText.text = ""
    }

    private fun classify() {
        val bitmap = photo ?: run { statusText.text = "Pick or take a photo first."; return }
        val labels = labelsEdit.text.toString().split(',').map { it.trim() }.filter { it.isNotEmpty() }
        if (labels.isEmpty()) { statusText.text = "Type at least one label."; return }
        work("classifying") {
            val clip = engine ?: throw IllegalStateException("no export folder loaded")
            var t0 = SystemClock.elapsedRealtimeNanos()
            val imageEmbedding = clip.embedImage(bitmap)
            val imageMs = ms(t0)
            t0 = SystemClock.elapsedRealtimeNanos()
            val classifier = ZeroShot.build(labels, TEMPLATES, clip.tokenizer, clip.textEncoder, clip.logitScale)
            val textMs = ms(t0) / (labels.size * TEMPLATES.size)
            val lines = classifier.topK(imageEmbedding, 5).map { p ->
                String.format(Locale.US, "%-20s %7.2f  %5.1f%%", p.label, p.score, 100 * p.probability)
            }
            val latency = String.format(
                Locale.US, "image %.1f ms (preprocessing included) · text %.1f ms per prompt (%d prompts)",
                imageMs, textMs, labels.size * TEMPLATES.size
            )
            runOnUiThread { resultText.text = (lines + "" + latency).joinToString("\n") }
            "Top ${lines.size} of ${labels.size} labels"
        }
    }

    private fun goldenCheck() = work("golden self-check") {
        val clip = engine ?: throw IllegalStateException("no export folder loaded")
        val report = GoldenCheck.run(clip)
        runOnUiThread { resultText.text = report.text }
        if (report.passed) "Golden self-check PASSED" else "Golden self-check FAILED"
    }

    /** Runs [task] on the worker thread; its result (or its error) becomes the status line. */
    private fun work(what: String, task: () -> String) {
        statusText.text = "$what…"
        worker.execute {
            val status = try {
                task()
            } catch (e: Throwable) {
                "$what failed: ${e.message ?: e.javaClass.simpleName}"
            }
            runOnUiThread { statusText.text = status }
        }
    }

    companion object {
        /** Prompt templates averaged per label ("{}" is the label), a few of CLIP's ImageNet ones. */
        val TEMPLATES = listOf(
            "a photo of a {}.",
            "a blurry photo of a {}.",
            "a photo of the large {}.",
            "a photo of the small {}.",
            "a close-up photo of a {}.",
        )

        fun ms(startNanos: Long): Double = (SystemClock.elapsedRealtimeNanos() - startNanos) / 1e6
    }
}
